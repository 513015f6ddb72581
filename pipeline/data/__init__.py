"""Data: the diagnosis vocabulary, dataset adapters (published layouts to one manifest table), the
manifest, labelling designs, image decoding and the decoded-image cache.
"""
