"""The Makefile's guards: `make clean` deletes one experiment's results and nothing else.

Run on a copy of the Makefile in a scratch project (a fake checkout with sources and .git), so a
failing guard cannot harm the real one.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"


@pytest.fixture
def project(tmp_path):
    for path in ("experiments/x/metrics.csv", "experiments/x.toml", "pipeline/cli.py", ".git/HEAD",
                 ".venv/bin/python", "features_cache/README.md", "features_cache/images/k/a.npy"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    (tmp_path / "experiments" / "outside").symlink_to(tmp_path / "pipeline")
    shutil.copy(MAKEFILE, tmp_path / "Makefile")
    return tmp_path


def make(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", *args], cwd=project, capture_output=True, text=True)


def files(project: Path) -> set[str]:
    return {str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()}


@pytest.mark.parametrize("exp", ["", " ", "/", ".", "..", "experiments", "experiments/",
                                 "experiments/../pipeline/cli.toml", "experiments/outside.toml",
                                 "experiments/x/deeper.toml", "pipeline.toml", "/tmp/x.toml"])
def test_clean_refuses_anything_but_one_experiment_folder(project, exp):
    before = files(project)
    result = make(project, "clean", f"EXP={exp}")
    assert result.returncode == 2, (exp, result.stdout, result.stderr)
    assert "EXP" in result.stderr and ("refusing" in result.stderr or "empty" in result.stderr)
    assert files(project) == before, f"EXP={exp!r} deleted files"


def test_clean_deletes_the_results_of_one_experiment_only(project):
    result = make(project, "clean", "EXP=experiments/x.toml")
    assert result.returncode == 0, result.stderr
    assert not any((project / "experiments" / "x").iterdir())
    assert {"experiments/x.toml", "pipeline/cli.py", ".git/HEAD",
            "features_cache/README.md"} <= files(project)
    assert make(project, "clean", "EXP=experiments/never-run.toml").returncode == 0


def test_clean_cache_keeps_its_readme_and_refuses_a_link_out_of_the_checkout(project):
    assert make(project, "clean-cache").returncode == 0
    assert sorted(p.name for p in (project / "features_cache").rglob("*")) == ["README.md"]
    shutil.rmtree(project / "features_cache")
    (project / "features_cache").symlink_to(project / "pipeline")
    result = make(project, "clean-cache")
    assert result.returncode == 2 and "refusing" in result.stderr
    assert (project / "pipeline" / "cli.py").is_file()
