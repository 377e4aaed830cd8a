"""Where a stale script run stops: inside the pruned model's forward passes, not only at the next element.

With ``runner.fastReruns`` a slider move starts the next run at once and asks the running one to stop, but
Streamlit stops a run only when it sends its next element. A run scoring the prompt (one forward: ~190 ms on
SmolLM2-135M) or between two refreshes of the growing text held the session lock that long while the run for
the newer setting waited for it (``ui.session.exclusive``). Here the run's own forwards check for a newer run
before each transformer block, so a stale run lets go within one block (a few ms).

The check is Streamlit's own (the one its cache waits use); where a Streamlit version lacks it, runs stop at
their next element as before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import nn

from prune_explorer.models.layers import block_name
from prune_explorer.state import PruningState

try:
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_run_yield_check
except ImportError:  # pragma: no cover - another Streamlit: runs stop at their next element

    def get_run_yield_check() -> Callable[[], None] | None:
        return None


@contextmanager
def between_blocks(state: PruningState) -> Iterator[None]:
    """While inside, every forward of the session's model in this thread checks for a newer run before each
    transformer block, and stops this script run there (Streamlit's StopException) if there is one. The
    hooks are the session's own (never the shared dense model's) and do nothing in other threads (the
    session's look-ahead or measurements)."""
    check = get_run_yield_check()
    if check is None:
        yield
        return
    thread = threading.current_thread()

    def before_block(module: nn.Module, args: tuple) -> None:
        if threading.current_thread() is thread:
            check()

    names = dict.fromkeys(filter(None, (block_name(layer) for layer in state.dense.layers)))
    handles = [state.model.get_submodule(name).register_forward_pre_hook(before_block) for name in names]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
