"""Asking many hosts at once: one thread per host in flight, answers in inventory order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def each_host(
    work: Callable[[T], R],
    items: Sequence[T],
    parallel: int,
    on_done: Callable[[R], None] | None = None,
) -> list[R]:
    """``work`` on every item, ``parallel`` at a time; results in the items' order, each
    handed to ``on_done`` as soon as it and those before it are done."""
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(items) or 1))) as pool:
        futures = [pool.submit(work, item) for item in items]
        results = []
        for future in futures:
            result = future.result()
            if on_done is not None:
                on_done(result)
            results.append(result)
    return results
