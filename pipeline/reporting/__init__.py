"""Reporting: the result tables as inputs (``results``), summaries and the paper's tables
(``tables``, numbers of the paper in ``paper``), figures (``figures``), markdown (``markdown``) and
``report.md`` itself (``report``). Nothing here imports TensorFlow or reads an experiment config.
"""
