"""The benchmark suite's smoke run (`make bench BENCH=--quick`): every section runs and is written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("1. Feature extraction", "2. Image cache", "3. SVM stage",
            "4. Scaling with the number of images", "5. Start-up of the svm stage",
            "6. Training throughput", "7. Scale-out on Dask")


@pytest.mark.slow
def test_quick_benchmark_writes_every_section(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick",
                             "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", text, re.M)
    for section in SECTIONS:
        assert section in headings, f"section {section!r} missing: {headings}"
    for section in SECTIONS:  # each section holds a table of measured figures
        body = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
        assert re.search(r"^\|.*\d.*\|$", body, re.M), f"no figures in {section!r}"
    assert re.search(r"^\| matmul peak \| \d+ GFLOP/s best", text, re.M), "no measured peak"
    assert "## Machine" in text and "`--quick` run: tiny sizes to check the code" in text
