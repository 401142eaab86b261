"""Output folders, checked before any work starts: writable, and (for training) not holding another run; and the
one way files are written whole (`atomic_write`).

Light on purpose (no torch): the eval package uses `check_writable` and `atomic_write` too.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .typed_config import ConfigError


class OutputDirError(ConfigError):
    """An output path that cannot be written, or that holds a run the new one would mix with."""


def nearest_existing(path: Path) -> Path:
    """``path`` itself if it exists, else its closest existing ancestor (a file when the path runs through one)."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe


def check_writable(path: str | Path, what: str = "output_dir") -> Path:
    """Raise `OutputDirError` unless ``path`` is (or can be created as) a folder we can write files into.

    Nothing is created: the closest existing folder is probed with a temporary file, removed at once.
    """
    path = Path(path).expanduser()
    probe = nearest_existing(path)
    if not probe.is_dir():
        raise OutputDirError(f"{what} {str(path)!r} cannot be a folder: {str(probe)!r} is a file; "
                             "pass a folder path")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise OutputDirError(f"{what} {str(path)!r} is not writable (cannot create files in {str(probe)!r}: "
                             f"{e.strerror}); pass a folder you can write to") from None
    return path


def atomic_write(path: Path, write: Callable[[str], object]) -> None:
    """``write(tmp)`` to a temporary file (a unique name) in ``path``'s folder, then rename it to ``path``: an
    interrupted write never leaves a half file, and concurrent writers never share a temporary file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # the permissions of a file opened plainly (mkstemp makes it owner-only)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
