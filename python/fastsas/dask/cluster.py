"""Running task graphs: the client to run on (given, connected to an address, N local
worker processes, the default client, or Dask's local scheduler), computing with progress,
and fixed-order tree reductions. Dask is imported on first use (the ``dist`` extra)."""
from __future__ import annotations

import contextlib
import sys
from string import Template
from typing import Any, Callable

import numpy as np

from fastsas._validate import check_int

__all__ = ["DEFAULT_SPLIT_EVERY", "INSTALL", "client_for", "compute", "dask_modules", "distributed_module",
           "OPTIONS_DOC", "task_threads", "tree_reduce", "with_options_doc"]

DEFAULT_SPLIT_EVERY = 8
INSTALL = 'pip install "fastsas[dist]"'


def dask_modules():
    """(dask, dask.array) imported on first use, with a message naming the extra."""
    try:
        import dask
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(f"fastsas.dask needs Dask: {INSTALL} ({exc})") from None
    return dask, da


def distributed_module():
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(f"a scheduler address or worker processes need dask.distributed: {INSTALL} ({exc})") \
            from None
    return distributed


@contextlib.contextmanager
def client_for(client: Any, scheduler: str | None, workers: int | None = None):
    """The client to run on (None: Dask's default scheduler); closes what it opened."""
    if sum(v is not None for v in (client, scheduler, workers)) > 1:
        raise ValueError("give at most one of client, scheduler (an address) and workers (a local process count)")
    if client is not None:
        yield client
        return
    if scheduler is not None:
        if not isinstance(scheduler, str) or not scheduler:
            raise TypeError(f"scheduler must be an address such as 'tcp://10.0.0.5:8786', got {scheduler!r}")
        distributed = distributed_module()
        try:
            opened = distributed.Client(scheduler, timeout="30s")
        except OSError as exc:
            raise ValueError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        with opened:
            yield opened
        return
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
            raise ValueError(f"workers must be a positive number of local worker processes, got {workers!r}")
        distributed = distributed_module()
        # One thread per process: the C++ core parallelises nothing inside a task then, and
        # Dask runs one task per core.
        with distributed.LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                                      dashboard_address=":0") as cluster, distributed.Client(cluster) as opened:
            yield opened
        return
    try:
        import distributed

        yield distributed.default_client()
    except (ImportError, ValueError):  # no distributed, or no client: Dask's local scheduler
        yield None


# The options every task graph takes, documented once ($options in their docstrings).
OPTIONS_DOC = """client : distributed.Client or None
        The client to run on; else a new one connected to `scheduler`, the default client,
        or Dask's local threaded scheduler.
    scheduler : str or None
        A scheduler address (``tcp://host:8786``) to connect to (closed afterwards).
    block_rows : int or None
        Rows per task for NumPy inputs (Dask arrays keep their blocks; a store defaults to
        its chunk_rows).
    split_every : int, default 8
        States merged per reduction task.
    threads : int or None
        Core threads per task (None: 1; Dask runs one task per worker thread).
    progress : bool or callable
        Show Dask's progress bar when true (distributed.progress with a client,
        dask.diagnostics.ProgressBar otherwise)."""


def with_options_doc(function: Callable) -> Callable:
    """Put OPTIONS_DOC where the docstring says $options."""
    function.__doc__ = Template(function.__doc__).safe_substitute(options=OPTIONS_DOC)
    return function


def task_threads(threads: Any) -> int:
    """Core threads per task: None means 1 (Dask runs one task per worker thread, so the
    cores are used by tasks side by side), else a positive integer."""
    return 1 if threads is None else check_int(threads, "threads", allow_none=True)


def compute(client: Any, objects: list, progress: Any, description: str = "Dask tasks") -> list:
    """Compute delayed objects on `client` (or locally). `progress` True shows Dask's own
    progress bar; a progress hook (``progress(iterable, description, total)``, as the CLI
    passes) gets the tasks' completions instead, so only one kind of bar is ever drawn."""
    dask, _ = dask_modules()
    hook = progress if callable(progress) else None
    if client is None:
        if hook is not None:
            for _ in hook([None], description, 1):
                out = list(dask.compute(*objects))
            return out
        if progress:
            from dask.diagnostics import ProgressBar

            with ProgressBar(out=sys.stderr):
                return list(dask.compute(*objects))
        return list(dask.compute(*objects))
    futures = client.compute(objects)
    if hook is not None:
        for _ in hook(distributed_module().as_completed(futures), description, len(futures)):
            pass
    elif progress:
        distributed_module().progress(futures)
    return client.gather(futures)


def tree_reduce(items: list, combine: Callable, split_every: int) -> Any:
    """A delayed tree reduction: combine(*group) over groups of `split_every`, level by
    level, in a fixed order (so the result does not depend on which task finishes first)."""
    dask, _ = dask_modules()
    if split_every < 2:
        raise ValueError(f"split_every must be at least 2, got {split_every!r}")
    while len(items) > 1:
        items = [dask.delayed(combine, pure=True)(*items[i:i + split_every])
                 for i in range(0, len(items), split_every)]
    return items[0]
