"""Opening the Dask cluster a stage's tasks run on (``[compute]`` of an experiment).

``scheduler`` is one of:

- ``"local"``: no cluster; tasks run one after another in the stage's process (no Dask import);
- ``"local-cluster"``: a ``dask.distributed.LocalCluster`` of ``workers`` processes, one thread
  each; on a node whose ``nvidia-smi`` lists GPUs and with ``dask-cuda`` installed, a
  ``LocalCUDACluster`` instead: one worker per GPU, each with its own ``CUDA_VISIBLE_DEVICES``;
- ``"slurm"``: a ``dask_jobqueue.SLURMCluster`` of ``workers`` jobs (queue, account, cores,
  memory, walltime and extra ``#SBATCH`` lines from the settings);
- ``"tcp://host:port"`` (or ``tls://``): an existing scheduler, whose workers were started by
  someone else (``dask worker tcp://host:port``).

Every worker must see the cache folder at the same path (a shared filesystem): tasks write their
entries there and the stage reads them back.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Iterator

from pipeline.errors import PipelineError

SCHEDULERS = ("local", "local-cluster", "slurm")
ADDRESS_PREFIXES = ("tcp://", "tls://")
INSTALL = "pip install '.[dask]'"


@dataclass(frozen=True)
class ComputeSettings:
    """Where tasks run; see the module docstring.

    Attributes:
        scheduler: ``"local"``, ``"local-cluster"``, ``"slurm"`` or a scheduler address.
        workers: worker processes of a local cluster, or SLURM jobs (0: one per CPU core, or per
            GPU with ``dask-cuda``; for SLURM, 0 means 1).
        slurm: keyword arguments of ``dask_jobqueue.SLURMCluster`` (queue, account, cores,
            memory, walltime, job_extra_directives).
    """

    scheduler: str = "local"
    workers: int = 0
    slurm: dict = field(default_factory=dict)

    @property
    def local(self) -> bool:
        return self.scheduler == "local"


def scheduler_problem(value: str) -> str | None:
    """Why ``value`` is not a scheduler setting (``None`` when it is one)."""
    if value in SCHEDULERS or (value.startswith(ADDRESS_PREFIXES)
                               and value.rpartition(":")[2].isdigit()):
        return None
    return ("one of " + ", ".join(repr(s) for s in SCHEDULERS)
            + " or a scheduler address such as 'tcp://host:8786'")


def gpu_count() -> int:
    """GPUs ``nvidia-smi -L`` lists (0 without the tool), found without importing TensorFlow."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return 0
    try:
        listed = subprocess.run([tool, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in listed.splitlines())


def _require(module: str, extra: str, setting: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise PipelineError(f"`compute.scheduler = {setting!r}` needs {module} ({extra}), which is "
                            f"not installed. Install it with `{INSTALL}`"
                            + (" and `pip install dask-jobqueue`" if module == "dask_jobqueue"
                               else "")
                            + ", or set `compute.scheduler = \"local\"`.") from None


def _local_cluster(settings: ComputeSettings):
    distributed = _require("distributed", "dask[distributed]", settings.scheduler)
    gpus = gpu_count()
    if gpus:
        with contextlib.suppress(ImportError):
            from dask_cuda import LocalCUDACluster

            return LocalCUDACluster(n_workers=settings.workers or gpus, threads_per_worker=1)
    if gpus:
        from pipeline.console import log

        log(f"compute: {gpus} GPU(s) but no dask-cuda: every worker sees every GPU; "
            "`pip install dask-cuda` gives one worker per GPU.")
    workers = settings.workers or os.cpu_count() or 1
    # Dask pins each worker's math libraries to one thread (OMP_NUM_THREADS=1, ...); a worker
    # trains a whole network, so give it its share of the cores instead.
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    env = {name: threads for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                      "OPENBLAS_NUM_THREADS")}
    return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                    dashboard_address=None, env=env)


@contextlib.contextmanager
def open_client(settings: ComputeSettings) -> Iterator[object | None]:
    """A ``dask.distributed.Client`` for ``settings`` (``None`` for ``"local"``), closed on exit
    along with any cluster it started.

    Raises:
        PipelineError: Dask (or dask-jobqueue) is not installed, naming the install command; the
            scheduler cannot be reached, naming the address.
    """
    if settings.local:
        yield None
        return
    distributed = _require("distributed", "dask[distributed]", settings.scheduler)
    cluster = None
    if settings.scheduler == "local-cluster":
        cluster = _local_cluster(settings)
    elif settings.scheduler == "slurm":
        jobqueue = _require("dask_jobqueue", "dask-jobqueue", settings.scheduler)
        cluster = jobqueue.SLURMCluster(**settings.slurm)
        cluster.scale(jobs=settings.workers or 1)
    try:
        try:
            client = distributed.Client(cluster if cluster is not None else settings.scheduler,
                                        timeout="30s")
        except OSError as exc:
            raise PipelineError(f"cannot reach the Dask scheduler {settings.scheduler} ({exc}). "
                                "Start it (`dask scheduler`, then `dask worker ADDRESS` on each "
                                "machine) or fix `compute.scheduler`.") from None
        try:
            yield client
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()
