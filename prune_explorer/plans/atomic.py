"""Write an export all or nothing: into a temporary folder next to the target, then one rename into place.

A target that exists, or whose folder cannot be written, is refused before anything is written; a write that
fails part way (a full disk, a killed process between files) leaves only the temporary folder, which is
removed, so no half-written export ever sits at the target's path.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class ExportError(ValueError):
    """An export target that cannot be used, or a write that failed (nothing was left at the target)."""


def check_target(target: Path | str) -> Path:
    """The target as a path, if an export may be written there.

    Raises:
        ExportError: the target exists, its parent folder is missing, not a folder, or not writable.
    """
    target = Path(target).expanduser()
    if target.exists() or target.is_symlink():
        raise ExportError(f"{target} already exists: choose a new name or remove it first (nothing written)")
    parent = target.parent.resolve()
    if not parent.is_dir():
        raise ExportError(f"cannot write {target}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"cannot write {target}: the folder {parent} is not writable (nothing written)")
    return target


def _temporary_folder(target: Path) -> Path:
    try:
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as exc:
        raise ExportError(
            f"cannot write {target}: {exc.strerror or exc} in {target.parent} (nothing written)"
        ) from exc


@contextmanager
def atomic_folder(target: Path | str) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``target``; on success it is renamed to ``target``.

    Raises:
        ExportError: the target is refused (see :func:`check_target`), or writing failed; in both cases
            nothing is left at ``target`` and the temporary folder is gone.
    """
    target = check_target(target)
    tmp = _temporary_folder(target)
    try:
        yield tmp
        os.rename(tmp, target)
    except OSError as exc:
        raise ExportError(f"writing {target} failed: {exc.strerror or exc} (nothing was left there)") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(target: Path | str) -> Iterator[Path]:
    """Yield a path inside a temporary folder next to ``target``; on success the file is renamed to it.

    Raises:
        ExportError: as :func:`atomic_folder`.
    """
    target = check_target(target)
    tmp = _temporary_folder(target)
    try:
        path = tmp / target.name
        yield path
        os.rename(path, target)
    except OSError as exc:
        raise ExportError(f"writing {target} failed: {exc.strerror or exc} (nothing was left there)") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
