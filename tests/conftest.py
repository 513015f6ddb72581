"""Test set-up: ``tests/`` on ``sys.path`` so tests can ``import formats`` (tests/formats.py), and
the longest modules first: pytest-xdist's workers (``make test`` runs two) take tests from the
front of their queues and steal from the back of each other's, so a minutes-long test started
last would leave the other worker idle."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# modules whose tests run for minutes: every shipped experiment end to end, the benchmark smoke run
FIRST = ("test_benchmarks.py", "test_experiments.py")


def pytest_collection_modifyitems(session, config, items):
    def rank(item) -> int:
        name = Path(str(item.fspath)).name
        return FIRST.index(name) if name in FIRST else len(FIRST)

    items.sort(key=rank)  # stable: each module's own order is kept
