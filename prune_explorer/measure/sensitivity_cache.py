"""Sensitivity results on disk: one JSON file per (model weights, method, sparsities, groups, token protocol).

A sweep over every layer of a 135M model takes minutes, so a finished result is kept under
``<cache root>/sensitivity/`` (the cache root of :func:`prune_explorer.models.smollm2.cache_root`:
``$PRUNE_EXPLORER_CACHE``, ``$XDG_CACHE_HOME/prune_explorer`` or ``~/.cache/prune_explorer``) and read back
by any later process or session asking the same question. The file name is a hash of the key, and the file
repeats the key, so a hash collision or an edited file is never mistaken for an answer. A file that cannot
be read or parsed is ignored with a log line (the sweep then runs again and rewrites it); files are written
to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from prune_explorer.models.smollm2 import cache_root

log = logging.getLogger(__name__)

# Bump when the measurement or the file layout changes: older files are then simply not found.
FORMAT = 1


def cache_dir(root: Path | str | None = None) -> Path:
    """The folder of sensitivity results: ``<root>/sensitivity`` (default root: ``smollm2.cache_root()``)."""
    return (Path(root).expanduser() if root is not None else cache_root()) / "sensitivity"


def cache_path(key: dict, folder: Path) -> Path:
    """The file holding the result for ``key`` (a JSON-able dict) in ``folder``."""
    digest = hashlib.sha256(json.dumps({"format": FORMAT, **key}, sort_keys=True).encode()).hexdigest()
    return folder / f"{digest[:40]}.json"


def load(key: dict, folder: Path) -> dict | None:
    """The stored result for ``key``, or None when there is none or the file is unreadable (logged)."""
    path = cache_path(key, folder)
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(stored, dict) or stored.get("format") != FORMAT:
            raise ValueError("not a sensitivity result of this format")
        if stored.get("key") != json.loads(json.dumps(key)):
            raise ValueError("its key differs from the one asked")
        result = stored["result"]
        if not isinstance(result, dict):
            raise ValueError("no result object")
        return result
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the sensitivity cache file %s: %s", path, exc)
        return None


def save(key: dict, result: dict, folder: Path) -> Path | None:
    """Write ``result`` for ``key`` (temporary file, then rename); a failure is logged, never raised."""
    path = cache_path(key, folder)
    tmp: Path | None = None
    try:
        payload = json.dumps({"format": FORMAT, "key": key, "result": result})
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False, encoding="utf-8") as f:
            tmp = Path(f.name)
            f.write(payload)
        os.replace(tmp, path)
        return path
    except (OSError, TypeError, ValueError) as exc:
        log.warning("could not write the sensitivity cache file %s: %s", path, exc)
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        return None
