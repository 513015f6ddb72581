"""Reference pipeline for transfer-learning melanoma screening.

Implements the protocol of Menegola et al., "Knowledge Transfer for Melanoma Screening with Deep
Learning" (ISBI 2017) as a chain of stages, each a module named after it: ``datasets`` (adapters to
one manifest table), ``designs`` (labelling designs), ``folds`` (5x2 cross-validation), ``images``
(decoded-image cache), ``pretrain`` / ``finetune`` (networks), ``extract`` (fc7 features),
``classify`` (linear SVM), ``evaluate`` (metrics and statistics) and ``report``.

Importing the package imports neither TensorFlow nor Keras; only the stages that run networks do.
"""

from pipeline.errors import PipelineError

__all__ = ["PipelineError"]
__version__ = "0.1.0"
