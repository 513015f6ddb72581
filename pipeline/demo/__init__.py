"""Synthetic demo data: dermoscopy-like lesions in derm7pt's layout and fundus images in Kaggle
Retinopathy's, drawn from a seeded generator.
"""
