"""Every benchmark of the pipeline, written to one markdown file (``make bench``).

Sections, each run in its own Python process (so TensorFlow, loaded by the extraction section,
never shares a process with the SVM or start-up measurements):

1. feature extraction: ``extract_features`` against the bare Keras forward pass (``bench_extract``);
2. image cache: decoding, reduced-scale decoding, a second pass from the cache (``bench_images``);
3. SVM stage: the demo's grid, an Atlas-sized grid, the reference protocol (``bench_svm``);
4. scaling with the number of images: svm and extract time and memory (``bench_scaling``);
5. start-up of the svm stage, TensorFlow never imported (``bench_startup``);
6. training throughput (``bench_train``);
7. the Dask path's overhead on a small finetune, and a paper estimate of the full studies on 1, 8
   and 64 GPUs (``bench_dask``).

The file starts with the machine (CPU, cores, memory, library versions) and a summary of the
goals; each section gives the command that produced it and how long it took. The file is written
atomically, once every section has run.

Usage: ``python benchmarks/run.py --out BENCHMARKS.md [--quick] [--sections extract svm ...]``
(``--quick``: tiny sizes, a smoke check of the code in about a minute; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# name -> (title, module, function returning the section's markdown)
SECTIONS = {
    "extract": ("1. Feature extraction", "bench_extract", "section"),
    "images": ("2. Image cache", "bench_images", "section"),
    "svm": ("3. SVM stage", "bench_svm", "stage_section"),
    "scaling": ("4. Scaling with the number of images", "bench_scaling", "section"),
    "startup": ("5. Start-up of the svm stage", "bench_startup", "section"),
    "train": ("6. Training throughput", "bench_train", "section"),
    "dask": ("7. Scale-out on Dask", "bench_dask", "section"),
}
PACKAGES = ("tensorflow", "keras", "numpy", "scikit-learn", "scipy", "pandas", "pillow",
            "joblib")


def _cpuinfo() -> dict:
    out: dict = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            out.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return out


def _meminfo_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2 ** 20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, text=True, capture_output=True, check=True).stdout
        return head + (" with uncommitted changes" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def numpy_matmul_peak(quick: bool = False) -> str:
    """numpy's float32 matmul rate on this host (BLAS, every core): best and median of 5 timed
    ``a @ b`` of two n x n matrices after one warm-up, 2 n^3 FLOPs each."""
    import numpy as np

    n = 1024 if quick else 4096
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    a @ b
    times = []
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    rates = sorted(2 * n ** 3 / s / 1e9 for s in times)
    return (f"{rates[-1]:.0f} GFLOP/s best, {rates[2]:.0f} median (numpy {np.__version__}, "
            f"float32 {n} x {n} @ {n} x {n}, 5 repeats after a warm-up; TensorFlow's is in "
            "section 1)")


def machine(quick: bool = False) -> str:
    """The machine section: CPU, cores, memory, numpy's matmul peak, OS, library versions,
    commit."""
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    simd = ", ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")
                     if f in flags) or "none listed"
    rows = [
        ("CPU", f"{cpu.get('model name', platform.processor() or platform.machine())} "
                f"(family {cpu.get('cpu family', '?')}, model {cpu.get('model', '?')}), "
                f"{cpu.get('cpu MHz', '?')} MHz reported; SIMD: {simd}"),
        ("cores", f"{os.cpu_count()} logical"),
        ("memory", _meminfo_gib()),
        ("matmul peak", numpy_matmul_peak(quick)),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        ("libraries", ", ".join(f"{p} {_version(p)}" for p in PACKAGES)),
        ("code", f"commit {_commit()}"),
        ("date", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
    ]
    return "\n".join(["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]) + "\n"


def run_section(name: str, quick: bool, out: Path) -> None:
    """Child mode: run one section in this process and write its markdown to ``out``."""
    sys.path.insert(0, str(HERE))
    _, module, function = SECTIONS[name]
    text = getattr(importlib.import_module(module), function)(quick)
    out.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md",
                        help="markdown file to write (default BENCHMARKS.md)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: a smoke check of the code, not a measurement")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS),
                        help="sections to run (default all)")
    parser.add_argument("--section", choices=list(SECTIONS), help=argparse.SUPPRESS)
    parser.add_argument("--to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.section:
        run_section(args.section, args.quick, args.to)
        return 0

    started = time.perf_counter()
    parts, elapsed, goals = {}, {}, []
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.pathsep.join(
        [str(HERE)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick and {"svm", "startup"} & set(args.sections):
            # one tiny experiment for both sections that need one (each copies its svm inputs)
            print("== a tiny experiment for the svm and start-up sections", file=sys.stderr,
                  flush=True)
            sys.path.insert(0, str(HERE))
            from bench_startup import tiny_experiment

            (Path(tmp) / "tiny").mkdir()
            tiny_experiment(Path(tmp) / "tiny")
            env["BENCH_TINY"] = str(Path(tmp) / "tiny")
        for name in args.sections:
            title = SECTIONS[name][0]
            print(f"== {title}", file=sys.stderr, flush=True)
            section_started = time.perf_counter()
            target = Path(tmp) / f"{name}.md"
            command = [sys.executable, str(Path(__file__).resolve()), "--section", name,
                       "--to", str(target)] + (["--quick"] if args.quick else [])
            done = subprocess.run(command, cwd=ROOT, env=env)
            elapsed[name] = time.perf_counter() - section_started
            if done.returncode:
                print(f"error: section {name!r} failed (exit {done.returncode}); nothing "
                      f"written to {args.out}.", file=sys.stderr)
                return done.returncode
            parts[name] = target.read_text(encoding="utf-8")
            goals += [f"- {title}: {line[line.index('Goal ('):]}"
                      for line in parts[name].splitlines() if "Goal (" in line]
            print(f"== {title}: {elapsed[name]:.0f} s", file=sys.stderr, flush=True)
    total = time.perf_counter() - started

    from pipeline.cache.files import write_text

    lines = ["# Benchmarks", "",
             "Written by `make bench` (`python benchmarks/run.py --out BENCHMARKS.md"
             + (" --quick" if args.quick else "") + "`); do not edit by hand. "
             f"All sections ran in one session, {total / 60:.1f} minutes in all.", ""]
    if args.quick:
        lines += ["**`--quick` run: tiny sizes to check the code; the figures measure "
                  "nothing.**", ""]
    lines += ["## Machine", "", machine(args.quick),
              "Timings are wall-clock on this machine and move with the load of its host (a "
              "virtual machine with 2 vCPUs): ratios are measured within one run, the methods "
              "compared alternated or run side by side; absolute times hold for this hardware "
              "only.", "", "## Goals", ""] + goals + [""]
    for name in args.sections:
        lines += [f"## {SECTIONS[name][0]}", "", f"*Section time: {elapsed[name]:.0f} s.*", "",
                  parts[name].rstrip(), ""]
    write_text(args.out, "\n".join(lines))
    print(f"wrote {args.out} ({total:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
