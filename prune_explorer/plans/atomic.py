"""Write an export all or nothing: into a temporary folder next to the target, then one rename into place.

A target that exists, or whose folder cannot be written, is refused before anything is written; a write that
fails part way (a full disk, a killed process between files) leaves only the temporary folder, which is
removed, so no half-written export ever sits at the target's path. A target that appears while the export is
written is kept as it is: the finished export is not moved over it.

Writers report a failed write either as ``OSError`` or, for safetensors' writer (whose I/O runs in Rust),
as ``SafetensorError`` ("Error while serializing: I/O error: No space left on device (os error 28)"): both
are write errors (:data:`WRITE_ERRORS`) and end as one :class:`ExportError` in plain words.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

WRITE_ERRORS = (OSError, SafetensorError)  # what a writer raises when the disk is full or not writable


class ExportError(ValueError):
    """An export target that cannot be used, or a write that failed (nothing was left at the target)."""


def reason(exc: BaseException) -> str:
    """A failed write in plain words ("No space left on device"), also when safetensors' writer wraps it."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc).removeprefix("Error while serializing: ").removeprefix("I/O error: ")


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
            f"cannot write {target}: {reason(exc)} in {target.parent} (nothing written)"
        ) from exc


def _appeared(target: Path) -> ExportError:
    return ExportError(
        f"{target} appeared while the export was written: it is kept as it was (nothing written)"
    )


def _place_folder(tmp: Path, target: Path) -> None:
    """Rename the finished folder to ``target`` unless something took the name meanwhile (``os.rename``
    would replace an empty folder there)."""
    if target.exists() or target.is_symlink():
        raise _appeared(target)
    os.rename(tmp, target)


def _place_file(path: Path, target: Path) -> None:
    """Give the finished file the name ``target`` without replacing a file that appeared meanwhile: a hard
    link fails when the name exists, where ``os.rename`` would silently replace it."""
    try:
        os.link(path, target)
    except FileExistsError:
        raise _appeared(target) from None
    except OSError:  # a file system without hard links: check, then rename
        if target.exists() or target.is_symlink():
            raise _appeared(target) from None
        os.rename(path, target)


@contextmanager
def atomic_folder(target: Path | str) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``target``; on success it is renamed to ``target``.

    Raises:
        ExportError: the target is refused (see :func:`check_target`), writing failed (a
            :data:`WRITE_ERRORS`), or the target appeared meanwhile; in every case nothing of the export is
            left at ``target`` and the temporary folder is gone.
    """
    target = check_target(target)
    tmp = _temporary_folder(target)
    try:
        yield tmp
        _place_folder(tmp, target)
    except WRITE_ERRORS as exc:
        raise ExportError(f"writing {target} failed: {reason(exc)} (nothing was left there)") from exc
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
        _place_file(path, target)
    except WRITE_ERRORS as exc:
        raise ExportError(f"writing {target} failed: {reason(exc)} (nothing was left there)") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
