"""Files written whole and read without following links.

Every file mm_hub writes for later reading goes through here: written beside its final name, then moved into place
with ``os.replace`` (atomic on one filesystem), so a reader (or a run killed half-way) never sees half a file or half a
folder. `read_regular` reads a file of a folder someone else may have prepared (a model folder to push) only when it
is a regular file, never what a symbolic link in it points to.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (parents created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinite floats (at any depth) replaced by None: strict JSON has no NaN, and parsers
    that follow the standard reject the ``NaN`` Python writes by default."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented, standard JSON (non-finite floats become null) atomically; returns the path."""
    return write_text(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")


def read_regular(path: str | os.PathLike) -> bytes | None:
    """The bytes of ``path`` when it is a regular file; None when nothing is there. The file is opened without
    following a symbolic link (``O_NOFOLLOW``) and checked on the open descriptor, so no link swapped in between can
    make it read another file.

    Raises:
        ValueError: ``path`` is a symbolic link, a folder or a special file.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)  # a FIFO must not block
    try:
        descriptor = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as error:  # ELOOP: a link; EISDIR and the like
        kind = "a symbolic link" if os.path.islink(path) else f"not a regular file ({error.strerror})"
        raise ValueError(f"{Path(path).name} is {kind}: only regular files are read") from None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ValueError(f"{Path(path).name} is not a regular file: only regular files are read")
        return handle.read()


def replace_folder(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Move the finished folder ``source`` to ``target``, replacing what was there; a reader sees the old folder or
    the new one, and ``source`` is gone either way. Returns the target."""
    source, target = Path(source), Path(target)
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    try:
        if target.exists():
            os.replace(target, old)
        os.replace(source, target)
    finally:
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(source, ignore_errors=True)
    return target


@contextmanager
def folder_written_whole(target: str | os.PathLike) -> Iterator[Path]:
    """A new folder beside ``target`` to write into; when the block ends without an error it replaces ``target``
    (see `replace_folder`), and on an error it is removed, leaving ``target`` as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    work.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield work
        replace_folder(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


__all__ = ["folder_written_whole", "json_safe", "read_regular", "replace_folder", "write_bytes", "write_json", "write_text"]
