"""Test set-up: ``tests/`` on ``sys.path`` so tests can ``import formats`` (tests/formats.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
