"""Benchmark: start-up of the svm stage, and proof that it never imports TensorFlow.

- Time from process start to the first SVM fit of ``python -m pipeline svm`` on a copy of the demo
  experiment: a fresh process runs ``pipeline.cli.main(["svm", ...])`` as ``python -m pipeline``
  does, with ``select_and_fit`` wrapped to note the time of its first call, with the default
  ``svm.n_jobs = -1`` (the stage fits its first run in that process before joblib's workers
  start), in 5 fresh processes: best / median / worst; goal <= 2 s (median).
- After the run, whether ``tensorflow`` or ``keras`` is in ``sys.modules``.
- Import time of every module the stage loaded against ``import tensorflow`` (fresh processes,
  best of three), and the stage's heaviest imports from ``python -X importtime``.

Usage: ``python benchmarks/bench_startup.py [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROCESSES = 5  # fresh processes timed
GOAL_S = 2.0  # goal: first fit within 2 s of process start (median process)


TINY = """
[experiment]
name = "tiny"
cells = ["none", "none+ft"]
cache_dir = "{cache}"
scaled_down = "benchmark smoke run"

[data]
dataset = "derm7pt"
root = "{data}/derm7pt"

[folds]
designs = ["melanoma_vs_benign"]
repeats = 2

[network]
input_size = 48
width = 0.0625

[train]
epochs = 1
batch_size = 16

[svm]
C_grid = [0.1, 1.0]
"""


def tiny_experiment(folder: Path, n_jobs: int | None = None) -> tuple[Path, str]:
    """A tiny experiment built up to its features in ``folder`` (``--quick``: no demo needed).

    ``run.py --quick`` builds one for the whole run and names it in ``$BENCH_TINY``: then its svm
    inputs are copied into ``folder``, as ``demo_copy`` copies the demo's."""
    note = "a tiny experiment of 48 cases (--quick), not the demo"
    built = os.environ.get("BENCH_TINY")
    if built:
        return _copy_svm_inputs(Path(built) / "demo", (Path(built) / "demo.toml").read_text(
            encoding="utf-8"), folder, n_jobs), note
    from pipeline.demo.writer import write_demo_data

    write_demo_data(folder / "data", seed=1, skin_cases=48, fundus_images=20)
    config = folder / "demo.toml"
    text = TINY.format(cache=folder / "cache", data=folder / "data")
    config.write_text(text, encoding="utf-8")
    # the stages up to features in one process (one TensorFlow start-up, not three)
    script = ("import sys; from pipeline.cli import main\n"
              "for stage in ('data', 'folds', 'pretrain', 'finetune', 'features'):\n"
              "    status = main([stage, '--config', sys.argv[1]])\n"
              "    if status: sys.exit(status)\n")
    subprocess.run([sys.executable, "-c", script, str(config)], cwd=ROOT, check=True,
                   capture_output=True)
    if n_jobs is not None:
        config.write_text(_with_n_jobs(text, n_jobs), encoding="utf-8")
    return config, note


def _with_n_jobs(text: str, n_jobs: int) -> str:
    """Config text with ``svm.n_jobs = n_jobs``."""
    return (text.replace("[svm]\n", f"[svm]\nn_jobs = {n_jobs}\n", 1) if "[svm]\n" in text
            else text + f"\n[svm]\nn_jobs = {n_jobs}\n")


def _copy_svm_inputs(results: Path, text: str, folder: Path, n_jobs: int | None) -> Path:
    """Copy what the svm stage reads from experiment ``results`` (its config ``text``) into
    ``folder``: the copy's results go to ``folder/demo/``, the feature entries stay where the
    config's cache holds them. Returns the copied config's path."""
    copy = folder / "demo"
    shutil.copytree(results / "folds", copy / "folds")
    for name in ("manifest.csv", "features.csv", "networks.json"):
        shutil.copy(results / name, copy / name)
    config = folder / "demo.toml"
    config.write_text(text if n_jobs is None else _with_n_jobs(text, n_jobs), encoding="utf-8")
    return config


def demo_copy(folder: Path, n_jobs: int | None = None, quick: bool = False) -> tuple[Path, str]:
    """Copy the demo experiment's svm inputs into ``folder`` (``make demo`` first if unbuilt).

    The copy's results go to ``folder/demo/``, so the demo's own files and ``make``'s
    timestamps stay untouched; feature entries are read from the project's ``features_cache``
    (the stage runs in the project root). With ``quick``, a tiny experiment instead.

    Args:
        folder: an empty folder.
        n_jobs: ``svm.n_jobs`` of the copy; ``None`` keeps the demo's.
        quick: build a tiny experiment in ``folder`` instead of using the demo.

    Returns:
        The copied config's path, and a note when ``make demo`` had to run (else empty).
    """
    if quick:
        return tiny_experiment(folder, n_jobs)
    demo = ROOT / "experiments" / "demo"
    note = ""
    if not (demo / "features.csv").is_file():
        start = time.perf_counter()
        subprocess.run(["make", "demo"], cwd=ROOT, check=True)
        note = f"`make demo` ran first ({time.perf_counter() - start:.0f} s, not counted)"
    text = (ROOT / "experiments" / "demo.toml").read_text(encoding="utf-8")
    return _copy_svm_inputs(demo, text, folder, n_jobs), note


def child(config: str, started: float) -> dict:
    """Run the svm stage as ``python -m pipeline`` does, noting the first ``select_and_fit``."""
    import_start = time.time()
    import pipeline.stages.svm as classify
    from pipeline.cli import main

    imported = time.time()
    real, first = classify.select_and_fit, []

    def noting(*args, **kwargs):
        if not first:
            first.append(time.time())
        return real(*args, **kwargs)

    classify.select_and_fit = noting
    status = main(["svm", "--config", config])
    ended = time.time()
    return {"status": status, "interpreter": import_start - started,
            "import": imported - import_start, "first_fit": first[0] - started,
            "total": ended - started, "tensorflow": "tensorflow" in sys.modules,
            "keras": "keras" in sys.modules,
            "modules": sorted(m for m in sys.modules if m.startswith("pipeline."))}


def import_seconds(modules: list[str], repeat: int = 3) -> float:
    """Best wall time of importing ``modules`` in a fresh interpreter."""
    code = ("import time; t = time.perf_counter(); " + "; ".join(f"import {m}" for m in modules)
            + "; print(time.perf_counter() - t)")
    best = float("inf")
    for _ in range(repeat):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        best = min(best, float(done.stdout.split()[-1]))
    return best


def heaviest_imports(modules: list[str], top: int = 6) -> list[tuple[str, float]]:
    """Packages by cumulative import time (``-X importtime``), seconds, ``pipeline`` left out.

    A package's time is that of the line where it is first imported, so it includes the
    packages it imports first itself (scikit-learn's includes much of SciPy's).
    """
    done = subprocess.run([sys.executable, "-X", "importtime", "-c",
                           "; ".join(f"import {m}" for m in modules)],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    totals: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        _, cumulative, name = line.split("|")
        name = name.strip()
        if "." not in name and name != "pipeline" and cumulative.strip().isdigit():
            totals[name] = max(totals.get(name, 0.0), int(cumulative) / 1e6)
    return sorted(totals.items(), key=lambda kv: -kv[1])[:top]


def section(quick: bool = False) -> str:
    """This benchmark's section of BENCHMARKS.md (the same at every size)."""
    from bench_extract import md_table  # not at the top: the child must import nothing extra

    with tempfile.TemporaryDirectory() as tmp:
        # The default svm.n_jobs (-1): the stage fits its first run in the calling process
        # before joblib's workers start, so the wrapper sees the first fit.
        config, note = demo_copy(Path(tmp), quick=quick)
        trials = []
        processes = 2 if quick else PROCESSES
        for _ in range(processes):
            started = time.time()
            done = subprocess.run([sys.executable, __file__, "--child", str(config),
                                   repr(started)], capture_output=True, text=True, cwd=ROOT)
            if done.returncode:
                raise RuntimeError(f"svm stage failed:\n{done.stderr[-3000:]}")
            trials.append(json.loads(done.stdout.strip().splitlines()[-1]))
    firsts = sorted(t["first_fit"] for t in trials)
    run = sorted(trials, key=lambda t: t["first_fit"])[len(trials) // 2]  # the median process
    goal = ("**met**" if firsts[len(firsts) // 2] <= GOAL_S else "**NOT met**")
    stage_modules = run["modules"]
    repeat = 1 if quick else 3
    stage_import = import_seconds(stage_modules, repeat)
    tf_import = import_seconds(["tensorflow"], repeat)
    heavy = heaviest_imports(stage_modules)
    lines = [
        "Command: `python benchmarks/bench_startup.py` (a process running "
        "`pipeline.cli.main([\"svm\", \"--config\", <copy of experiments/demo.toml, default "
        "svm.n_jobs>])`, as `python -m pipeline svm` does" + (f"; {note}" if note else "")
        + ").", "",
        md_table(["from process start to", "seconds"], [
            ["interpreter up (before the first import)", f"{run['interpreter']:.2f}"],
            ["`import pipeline.stages.svm` + `pipeline.cli` done",
             f"{run['interpreter'] + run['import']:.2f}"],
            ["**first SVM fit** (`select_and_fit` called)", f"**{run['first_fit']:.2f}**"],
            ["stage finished (all runs, default n_jobs)", f"{run['total']:.2f}"]]), "",
        f"- Default `svm.n_jobs = -1`, {len(trials)} fresh processes; the table is the median "
        f"process (by first fit). First fit best {firsts[0]:.2f} s / median "
        f"{firsts[len(firsts) // 2]:.2f} s / worst {firsts[-1]:.2f} s. Goal (median <= "
        f"{GOAL_S:g} s to first fit): {goal}.",
        f"- TensorFlow imported by the svm stage: **{'yes' if run['tensorflow'] else 'no'}** "
        f"(`'tensorflow' in sys.modules` after the run); Keras: "
        f"{'yes' if run['keras'] else 'no'}.",
        f"- Import of the {len(stage_modules)} `pipeline` modules the stage loaded "
        f"({', '.join(m.split('.', 1)[1] for m in stage_modules)}) with their dependencies: "
        f"**{stage_import:.2f} s**; `import tensorflow`: **{tf_import:.2f} s** (fresh "
        f"processes, best of {repeat}).",
        "- Heaviest packages the stage imports (`python -X importtime`, cumulative, nested "
        "packages counted in the one that imports them first): "
        + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in heavy) + ".",
    ]
    imports = run["interpreter"] + run["import"]
    weights = dict(heavy)
    lines.append(
        f"- Where the time goes (median process): imports {imports:.2f} s of the "
        f"{run['first_fit']:.2f} s (scikit-learn {weights.get('sklearn', 0.0):.2f} s of them: "
        "importing any estimator loads `sklearn.utils.fixes`, which imports `scipy.stats`; "
        f"pandas {weights.get('pandas', 0.0):.2f} s); then {run['first_fit'] - imports:.2f} s "
        "to read the config, manifest and folds and plan the runs (from the feature entries' "
        "manifests; each entry's files are verified by the process that loads them)."
        + ("" if firsts[len(firsts) // 2] <= GOAL_S else
           " The imports of scikit-learn and pandas alone set the floor on this host."))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        print(json.dumps(child(argv[1], float(argv[2]))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    text = section()
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
