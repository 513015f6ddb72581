"""GramLinearSVC against scikit-learn's estimator contract (every check of check_estimator)."""

from __future__ import annotations

import os
import subprocess
import sys

from sklearn.utils.estimator_checks import parametrize_with_checks

from pipeline.classifiers.svm import GramLinearSVC


# One test case per check, none skipped or expected to fail here. scikit-learn itself skips
# check_array_api_input unless SCIPY_ARRAY_API=1 is set before SciPy is imported: see below.
@parametrize_with_checks([GramLinearSVC()])
def test_sklearn_estimator_check(estimator, check):
    check(estimator)


def test_array_api_check_passes_when_enabled():
    code = ("import warnings; warnings.simplefilter('ignore'); "
            "from sklearn.utils.estimator_checks import check_estimator; "
            "from pipeline.classifiers.svm import GramLinearSVC; "
            "res = check_estimator(GramLinearSVC(), on_fail=None); "
            "bad = [(r['check_name'], r['status']) for r in res if r['status'] != 'passed']; "
            "assert not bad, bad; "
            "assert any(r['check_name'] == 'check_array_api_input' for r in res)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "SCIPY_ARRAY_API": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
