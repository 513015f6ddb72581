"""Folds: the folds table and its invariants (``table``), semi-random 5×2 cross-validation
(``crossval``), the official split (``official``) and the reference code's folds (``reference``).
"""
