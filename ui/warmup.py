"""What a fresh server does once before its first browser session: everything a first view would otherwise
wait for that does not depend on the session (``app.py`` calls :func:`run` from its startup hook).

The modules every page imports (torch, transformers' model code, plotly, the library) are imported; the
built-in model is loaded once through the library, which also brings in its loader's own imports; the
slider's numba kernels are compiled or read from numba's cache. The model itself is loaded again by the
first session through ``ui.loading`` (stories260K: milliseconds), which keeps one path for loading.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import time
from pathlib import Path

import torch

import ui
from prune_explorer.models.loading import load_model
from prune_explorer.pruning import kernels
from ui import session

log = logging.getLogger(__name__)


def run() -> dict[str, float]:
    """Import the app's modules, load the default model once and warm the slider kernels; seconds taken."""
    began = time.perf_counter()
    for module in pkgutil.iter_modules([str(Path(ui.__file__).parent)]):
        importlib.import_module(f"ui.{module.name}")
    imported = time.perf_counter()
    dense = load_model(session.default_source())
    with torch.no_grad():  # torch's first call of each op pays for its set-up
        dense.model(input_ids=torch.tensor([dense.tokenizer.encode("warm up", bos=True)]))
    kernels.warm_up()
    done = time.perf_counter()
    seconds = {"imports_s": imported - began, "model_and_kernels_s": done - imported}
    log.info("warm-up: %s", seconds)
    return seconds
