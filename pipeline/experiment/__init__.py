"""The experiment layer: the config (schema, loading, overrides), per-stage settings stamps and
the files an experiment's stages hand to each other. Read by ``pipeline.stages`` only; the library
never imports it.
"""
