"""Classifiers on cached features: the paper's L2-normalised linear SVM, C tuned for AUC."""
