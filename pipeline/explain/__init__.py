"""Attributions: what a network looks at (integrated gradients, Grad-CAM) and the targets they
explain (an SVM's decision score through the network), on ``tf.GradientTape``.

- ``pipeline.explain.attributions``: ``integrated_gradients`` and ``grad_cam``;
- ``pipeline.explain.targets``: differentiable targets from pixels to one score per image;
- ``pipeline.explain.overlay``: attribution maps drawn over their images (PNG) and a grid figure.
"""
