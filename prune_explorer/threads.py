"""How many threads torch gives each kind of work.

Token-by-token generation and one short forward are chains of small ops. On this 2-core machine one thread
runs them as fast as two (SmolLM2-135M, 12 new tokens: 890 vs 908 ms; stories260K, 40 tokens: 102 vs 107
ms) and stays that fast while something else wants a core, such as the browser drawing the page (800 vs
2027 ms; 97 vs 414 ms), since two OpenMP threads wait for each other whenever one is descheduled. Long
batched forwards (perplexity windows, timing runs) keep every core.

torch's count belongs to the calling thread, but a thread started later takes the count last set anywhere,
so every worker sets its own (:func:`use_all_cores`) instead of trusting what it inherited.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numba
import torch

ALL_CORES = torch.get_num_threads()  # what torch chose at start-up (OMP_NUM_THREADS, or every core)
INTERACTIVE = 1  # generation and single short forwards


def use_all_cores() -> None:
    """Give the calling thread every core torch started with (call first in a worker or a script run)."""
    if torch.get_num_threads() != ALL_CORES:
        torch.set_num_threads(ALL_CORES)


@contextmanager
def interactive() -> Iterator[None]:
    """One thread, in torch and in the numba kernels of the slider path, for the calling thread's small,
    latency-bound work (see the module docstring)."""
    before, before_numba = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(INTERACTIVE)
    numba.set_num_threads(INTERACTIVE)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        numba.set_num_threads(before_numba)
