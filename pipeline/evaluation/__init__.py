"""Evaluation: ``metrics`` of one run, ``statistics`` over runs (intervals, 5x2cv tests)."""
