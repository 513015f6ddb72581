"""The stages of an experiment: one module per ``make`` target, named like it.

``data``, ``folds``, ``pretrain``, ``finetune``, ``features``, ``svm``, ``report``, ``compare`` and
``demo_data``. Each reads the experiment config (``pipeline.experiment``), calls the library with
explicit arguments and writes its result files; ``python -m pipeline <stage> --config EXP`` runs one.
These are the only modules that read an experiment config, with ``pipeline.experiment`` itself.
"""
