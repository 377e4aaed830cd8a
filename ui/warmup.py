"""What a fresh server does once before its first browser session: everything a first view would otherwise
wait for that does not depend on the session (``app.py`` calls :func:`run` from its startup hook).

The modules every page imports (torch, transformers' model code, plotly, the library) are imported; the
built-in model is loaded through the sessions' own path (``ui.loading``, Streamlit's resource cache), so the
first session finds it loaded, its slider kernels compiled and its ranking under way; the inputs every
session shares on it are prepared (the tokenized evaluation text, the default calibration batch); and the
one-off costs inside Streamlit and Plotly that a first page would pay are paid (Streamlit's emoji pattern,
compiled the first time an alert's text is not ASCII; Plotly's validators of each trace the pages draw).
The shared measurements (dense perplexity, the default sweep) follow in a thread once the server answers.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import threading
import time
from pathlib import Path

import torch

import ui
from prune_explorer.models.dense import DenseModel
from ui import defaults, loading, methods, outputs, session, sweeps

log = logging.getLogger(__name__)


def run() -> dict[str, float]:
    """Import the app's modules, load the default model, prepare what its first view reads; seconds taken.

    The shared measurements (dense perplexity, the default sweep) then start in a thread: the server answers
    without waiting for them, and a session that asks for one meanwhile waits for that computation instead
    of starting its own (the shared cache builds each key once).
    """
    began = time.perf_counter()
    for module in pkgutil.iter_modules([str(Path(ui.__file__).parent)]):
        importlib.import_module(f"ui.{module.name}")
    imported = time.perf_counter()
    dense = loading.load_dense(session.default_source())
    with torch.no_grad():  # torch's first call of each op pays for its set-up
        dense.model(input_ids=torch.tensor([dense.tokenizer.encode("warm up", bos=True)]))
    outputs.eval_ids(dense)
    methods.default_batch(dense)
    loaded = time.perf_counter()
    _streamlit_and_plotly()
    done = time.perf_counter()
    threading.Thread(
        target=_shared_measurements, args=(dense,), name="prune-explorer-warm", daemon=True
    ).start()
    seconds = {
        "imports_s": imported - began,
        "model_and_inputs_s": loaded - imported,
        "figures_s": done - loaded,
    }
    log.info("warm-up: %s", seconds)
    return seconds


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
