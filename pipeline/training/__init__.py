"""Training: the recipe, minority augmentation, the one training routine with resumable
checkpoints, and trained networks in the content-keyed cache (``netstore``).
"""
