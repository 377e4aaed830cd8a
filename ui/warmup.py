"""What a fresh server does once before its first browser session: everything a first view would otherwise
wait for that does not depend on the session (``app.py`` calls :func:`run` from its startup hook).

The modules every page imports (torch, transformers' model code, plotly, the library) are imported; the
built-in model is loaded through the sessions' own path (``ui.loading``, Streamlit's resource cache), so the
first session finds it loaded, its slider kernels compiled and its ranking under way; the inputs every
session shares on it are prepared (the tokenized evaluation text, the default calibration batch); and the
one-off costs inside Streamlit and Plotly that a first page would pay are paid (Streamlit's emoji pattern,
compiled the first time an alert's text is not ASCII; Plotly's validators of each trace the pages draw).
The shared measurements (dense perplexity, the default sweep) follow in a thread once the server answers.

Last, what the warm-up made is frozen out of the garbage collector's sight (:func:`freeze_start_up_objects`).
"""

from __future__ import annotations

import gc
import importlib
import logging
import pkgutil
import threading
import time
from pathlib import Path

import torch

import ui
from prune_explorer.models.dense import DenseModel
from ui import calibration_view, defaults, loading, outputs, session, sparsity_grid, sweeps

log = logging.getLogger(__name__)


def run() -> dict[str, float]:
    """Import the app's modules, load the default model, prepare what its first view reads; seconds taken.

    The shared measurements (dense perplexity, the default sweep) then start in a thread: the server answers
    without waiting for them, and a session that asks for one meanwhile waits for that computation instead
    of starting its own (the shared cache builds each key once).
    """
    began = time.perf_counter()
    gc.disable()  # nothing made here is garbage for long: collections would only scan it (see below)
    try:
        dense, seconds = _prepare(began)
    finally:
        freeze_start_up_objects()
    threading.Thread(
        target=_shared_measurements, args=(dense,), name="prune-explorer-warm", daemon=True
    ).start()
    log.info("warm-up: %s", seconds)
    return seconds


def _prepare(began: float) -> tuple[DenseModel, dict[str, float]]:
    for module in pkgutil.iter_modules([str(Path(ui.__file__).parent)]):
        importlib.import_module(f"ui.{module.name}")
    imported = time.perf_counter()
    dense = loading.load_dense(session.default_source())
    with torch.no_grad():  # torch's first call of each op pays for its set-up
        dense.model(input_ids=torch.tensor([dense.tokenizer.encode("warm up", bos=True)]))
    outputs.eval_ids(dense)
    calibration_view.default_batch(dense)
    loaded = time.perf_counter()
    _streamlit_and_plotly()
    done = time.perf_counter()
    return dense, {
        "imports_s": imported - began,
        "model_and_inputs_s": loaded - imported,
        "figures_s": done - loaded,
    }


def freeze_start_up_objects() -> None:
    """Keep the objects made at start-up out of every later garbage collection.

    A full collection traverses every object the collector tracks, and with torch, transformers, Streamlit
    and the built-in model in memory that is about 280,000 objects after the imports and 520,000 after the
    warm-up: 130 ms for one ``gc.collect(2)`` of the first on the development machine, and 56-318 ms for
    the full collections Python started by itself in one short browser bench, each holding the GIL, so
    that a slider step caught by one waited for it. The modules, classes and the default model live as long
    as the process, so collecting them is wasted work; ``gc.freeze`` moves them to a generation the
    collector never scans, and what sessions create later is collected as before. The garbage made so far
    is collected first, so nothing dead is frozen; then the collector, off during the warm-up (whose own
    full collections took ~1.4 s of a fresh server's start), is on again.
    """
    gc.collect()
    gc.freeze()
    gc.enable()


def _shared_measurements(dense: DenseModel) -> None:
    """What a new session's first view measures in the background on the default model, for all sessions."""
    try:
        outputs.dense_perplexity(dense)
        sweeps.perplexity_sweep(dense, defaults.first_settings(dense), None, None)
    except Exception:  # a session computes it again, and reports what goes wrong
        log.exception("warm-up measurements failed")


def _streamlit_and_plotly() -> None:
    import plotly.graph_objects as go
    from streamlit.string_util import extract_leading_emoji

    extract_leading_emoji("× ‖")  # compiles Streamlit's emoji pattern (0.4-2 s) into re's cache
    figure = go.Figure(
        [go.Bar(x=[1], y=[1]), go.Histogram(x=[1]), go.Scatter(x=[1], y=[1]), go.Heatmap(z=[[1]])]
    )
    figure.update_layout(height=100, legend={"orientation": "h"}, margin={"t": 0})
    figure.update_xaxes(type="log")
    figure.to_plotly_json()
    sparsity_grid.cell_color(0.0)  # the Layers grid's colours, sampled once per process
