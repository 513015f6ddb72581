"""Content-keyed caches and atomic files: ``files`` (hashes, canonical JSON keys, atomic writes),
``entries`` (cache entries: completion, verification, locks, guarded removal).

A cache entry's key hashes everything that determines its bytes; file dates are never trusted.
"""
