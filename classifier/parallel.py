"""Run one function over many inputs on local processes or a Dask cluster, results in order.

``scheduler`` is ``"local"`` (joblib/loky worker processes, ``jobs`` at a time; ``jobs <= 1``
runs in this process), ``"dask"`` (a local Dask cluster of ``jobs`` worker processes, made
and torn down here) or the address of a running Dask scheduler (``tcp://host:8786``), whose
workers must have shortflow installed and see the input paths.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from typing import Any, TypeVar

from classifier.errors import ShortflowError

__all__ = ["ordered_map"]

T = TypeVar("T")
_CONNECT_TIMEOUT_S = 10.0


def ordered_map(
    func: Callable[..., T],
    args: Sequence[tuple[Any, ...]],
    *,
    jobs: int = 1,
    scheduler: str = "local",
    progress: bool = False,
    desc: str = "featurize",
    error: type[ShortflowError] = ShortflowError,
) -> Iterator[T]:
    """``func(*a)`` for every ``a`` in ``args``, yielded in the order of ``args`` as soon as
    each is ready and the ones before it were yielded (a result is held only until then).

    Raises ``error`` when Dask is missing or the scheduler cannot be reached; exceptions
    from ``func`` pass through unchanged.
    """

    def bar(results: Iterator[T]) -> Iterator[T]:
        from tqdm import tqdm  # here: a one-file run need not import it

        return iter(
            tqdm(
                results, total=len(args), desc=desc, unit=" file", disable=not progress, leave=False
            )
        )

    if scheduler == "local":
        if jobs <= 1 or len(args) <= 1:
            yield from bar(func(*a) for a in args)
            return
        import joblib

        tasks = (joblib.delayed(func)(*a) for a in args)
        yield from bar(joblib.Parallel(n_jobs=min(jobs, len(args)), return_as="generator")(tasks))
        return
    yield from bar(_dask_map(func, args, jobs, scheduler, error))


def _dask_map(
    func: Callable[..., T],
    args: Sequence[tuple[Any, ...]],
    jobs: int,
    scheduler: str,
    error: type[ShortflowError],
) -> Iterator[T]:
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        raise error(
            "the dask scheduler needs dask[distributed]: pip install 'dask[distributed]'"
        ) from exc
    with ExitStack() as stack:
        if scheduler == "dask":
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=max(1, jobs),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                )
            )
            client = stack.enter_context(Client(cluster))
        else:
            try:
                client = stack.enter_context(Client(scheduler, timeout=_CONNECT_TIMEOUT_S))
            except (OSError, TimeoutError, ValueError) as exc:
                raise error(f"cannot reach dask scheduler {scheduler}: {exc}") from exc
        pending = deque(client.submit(func, *a, pure=False) for a in args)
        while pending:
            future = pending.popleft()
            yield future.result()
            future.release()  # Dask may drop the result now
