"""Files that appear whole or not at all (written beside their target, then renamed over it),
and the checksum that tells one file from another."""
from __future__ import annotations

import hashlib
import os
import shutil
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


def atomic_copy(source: str | Path, destination: str | Path) -> None:
    """Copy ``source`` to ``destination`` so that ``destination`` appears only once complete."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as reader, atomic_write(destination) as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
