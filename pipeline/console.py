"""Messages to the person running a command: one line to stderr, flushed at once.

Every stage and command reports progress through ``log`` (progress bars are tqdm's, also on
stderr), so stdout stays free for the results a command prints.
"""

from __future__ import annotations

import sys


def log(message: str) -> None:
    """Print ``message`` as one line to stderr and flush it (visible before a long step starts)."""
    print(message, file=sys.stderr, flush=True)
