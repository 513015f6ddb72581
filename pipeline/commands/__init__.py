"""Standalone commands: tools that take explicit files and options, never an experiment config
(``designs``, ``folds-import``, ``images``, ``networks``, the converters).
"""
