"""A task farm: independent tasks run in the stage's process or on a Dask cluster, one progress
bar over all of them, and a failed task's error re-raised with the task's name.

A stage plans its tasks (one per missing cache entry) and hands them to ``run_tasks``. Each task is
a module-level function with picklable arguments; it writes its own cache entry atomically under
the entry's lock (``pipeline.cache.entries.claim``), so a task run twice, or two workers racing
for one entry, still give one valid entry, and a task killed half-way leaves no entry that looks
complete. With no client the same functions run in-process, in order, exactly as before there was
a cluster.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Callable

from tqdm import tqdm

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Task:
    """One unit of work: ``fn(*args)``, named ``label`` in progress and error messages (its cell,
    design and run)."""

    label: str
    fn: Callable
    args: tuple = ()


def call(client, fn: Callable, *args) -> Any:
    """``fn(*args)`` where the tasks run: in-process, or on one worker of ``client`` (so a value
    such as the worker's device kind comes from the machines that compute)."""
    if client is None:
        return fn(*args)
    return client.submit(fn, *args, pure=False).result()


def run_tasks(client, tasks: list[Task], what: str) -> list:
    """Run every task; returns their results in task order.

    Args:
        client: a ``dask.distributed.Client``, or ``None`` to run in this process.
        tasks: the tasks.
        what: the stage, e.g. ``"finetune"`` (progress bar and errors).

    Raises:
        PipelineError: naming every failed task and its error, once all tasks have finished or
            failed (finished tasks keep their entries; the rerun computes only what is missing).
    """
    if not tasks:
        return []
    bar = tqdm(total=len(tasks), desc=f"{what} tasks", unit="task", leave=False)
    try:
        if client is None:
            results = []
            for task in tasks:
                try:
                    results.append(task.fn(*task.args))
                except PipelineError as exc:
                    raise PipelineError(f"{what} {task.label}: {exc}") from exc
                bar.update()
            return results
        return _run_on(client, tasks, what, bar)
    finally:
        bar.close()


def _run_on(client, tasks: list[Task], what: str, bar) -> list:
    from distributed import as_completed

    run = uuid.uuid4().hex[:8]
    futures = [client.submit(t.fn, *t.args, pure=False, key=f"{what}-{run}-{i}")
               for i, t in enumerate(tasks)]
    index = {f.key: i for i, f in enumerate(futures)}
    failed = []
    for future in as_completed(futures):
        if future.status != "finished":
            failed.append((index[future.key], future.exception()))
        bar.update()
    if failed:
        failed.sort(key=lambda f: f[0])
        lines = [f"{tasks[i].label}: {type(exc).__name__}: {exc}" for i, exc in failed]
        raise PipelineError(f"{what}: {len(failed)} of {len(tasks)} tasks failed:\n  "
                            + "\n  ".join(lines) + f"\nThe {len(tasks) - len(failed)} finished "
                            f"tasks are cached; rerun `make {what}` to compute only what is "
                            "missing.") from failed[0][1]
    return [f.result() for f in futures]
