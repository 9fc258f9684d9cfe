"""Files that appear whole or not at all: written beside their target, then renamed over it."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", newline: str | None = None) -> Iterator[IO]:
    """Open a unique temporary sibling of ``path``; on success flush, fsync and rename it to
    ``path``; on any error remove it. Safe with several processes writing the same path."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # as an ordinary open() would, not mkstemp's 0600
    try:
        with os.fdopen(handle, mode, newline=newline) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
