"""Reference pipeline for transfer-learning melanoma screening.

Implements the protocol of Menegola et al., "Knowledge Transfer for Melanoma Screening with Deep
Learning" (ISBI 2017), and extensions, in two layers:

- the orchestration: ``pipeline.stages`` (one module per make target: data, folds, pretrain,
  finetune, features, svm, report, compare, demo_data) over ``pipeline.experiment`` (the config,
  its schema, stamps and the files stages hand to each other); ``pipeline.commands`` (standalone
  tools); ``pipeline.cli`` (``python -m pipeline COMMAND``);
- the library, which never reads a config: ``data`` (vocabulary, dataset adapters, manifest,
  designs, images, image cache), ``folds``, ``models`` (registry, builders, weights, converters),
  ``training``, ``features`` (the feature cache), ``classifiers`` (the SVM), ``evaluation``
  (metrics, statistics), ``reporting``, ``demo`` (synthetic data), and ``protocol`` (sources and
  cells), ``cache``, ``console`` and ``errors``.

Importing the package imports neither TensorFlow nor Keras nor scikit-learn; ``GramLinearSVC`` is
loaded on first use (``from pipeline import GramLinearSVC``).
"""

from pipeline.errors import PipelineError

__all__ = ["GramLinearSVC", "PipelineError"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "GramLinearSVC":
        from pipeline.classifiers.svm import GramLinearSVC

        return GramLinearSVC
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
