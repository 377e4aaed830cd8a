"""The fresh server's warm-up (ui.warmup): what the first visitor's first view reads is ready when it comes.

Each check can fail: a warm-up that loads the model on another path than the sessions', or prepares a
calibration batch, an evaluation text or a sweep under a key the first view does not ask for, leaves the
first view computing it again (seconds on a fresh server).
"""

from __future__ import annotations

import gc
import threading

from streamlit.testing.v1 import AppTest

from tests.support.apptest import APP, TIMEOUT, navigation_not_pages_folder
from ui import calibration_view, outputs, results, sweeps, warmup


def _join_warm_thread() -> None:
    for thread in threading.enumerate():
        if thread.name == "prune-explorer-warm":
            thread.join(timeout=TIMEOUT)


def test_the_first_view_finds_what_the_warm_up_prepared():
    gc.unfreeze()
    seconds = warmup.run()
    assert set(seconds) == {"imports_s", "model_and_inputs_s", "figures_s"}
    # What start-up made is out of the collector's sight (torch, transformers, Streamlit: >100,000 objects),
    # and the collector is on again.
    frozen = gc.get_freeze_count()
    assert frozen > 100_000 and gc.isenabled()
    assert len(gc.get_objects()) < frozen / 4
    gc.unfreeze()  # the other tests' objects are collected as usual
    _join_warm_thread()
    with navigation_not_pages_folder():
        at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
        assert not at.exception, at.exception
        dense = at.session_state["pruning_state"].dense
        # The session's model is the warmed one (one load per process), with its shared inputs in its cache.
        assert results.peek_shared(dense, ("eval_ids", dense.info.get("text_set", "stories"))) is not None
        batch, error = at.session_state["calibration_batch"]
        assert error is None and batch is calibration_view.default_batch(dense)
        assert outputs.cached_dense_perplexity(dense) is not None
        # The default sweep was measured under the key the first view asks for.
        applied = at.session_state["pruning_applied"]
        key = sweeps._sweep_key(applied)
        assert results.peek_shared(dense, key) is not None, "the warm-up swept other settings"
