"""Networks: the registry of specs, their builders, ImageNet weights and converters.

Library code: every function takes explicit arguments; nothing here reads an experiment config.
Importing this package does not import TensorFlow.
"""
