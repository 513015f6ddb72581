"""Where a stage's tasks run: in the stage's own process, or on a Dask cluster (``cluster``), and
the task farm that runs them with one progress bar (``farm``)."""
