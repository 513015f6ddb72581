"""Trained models outside the pipeline: the exported model folder and prediction on image files.

- ``pipeline.serving.folder``: the self-contained model folder (network weights, linear SVM,
  preprocessing, image decoding settings, class names, metadata encoding, provenance, schema
  version), written atomically with file digests, and read back with every file checked;
- ``pipeline.serving.predict``: image files -> decoded pixels -> network features -> L2
  normalisation -> the SVM's decision scores and predicted classes (and attribution maps), with no
  experiment folder or config.

The ``export`` stage writes a folder; the ``predict`` command reads one.
"""
