"""Features: a network's feature-layer output over the image cache, cached on disk (``extraction``)."""
