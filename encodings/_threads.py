"""The threads that encodings spread large array work over (numpy and torch release the GIL)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

import torch


def thread_count() -> int:
    """How many threads to use: torch's intra-op setting (:func:`torch.get_num_threads`).

    The scoring engine sets it from the cores the process may use.
    """
    return torch.get_num_threads()


def in_threads(work: Callable[[int], None], parts: int) -> None:
    """Call ``work(0)``, ..., ``work(parts - 1)``, at once on the shared threads (here if ``parts <= 1``).

    Raises:
        Exception: the first exception of any part, once every part has finished.
    """
    if parts <= 1:
        work(0)
        return
    # Not executor.map: it raises at the first failed part while the others may still be
    # writing into the caller's arrays.
    futures = [_executor().submit(work, part) for part in range(parts)]
    wait(futures)
    for future in futures:
        future.result()


@functools.cache
def _executor() -> ThreadPoolExecutor:
    """Threads shared by every call; they start when first needed, one per part running at once."""
    return ThreadPoolExecutor(thread_name_prefix="fooling-encoding")
