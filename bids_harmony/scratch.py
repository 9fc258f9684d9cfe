"""A private temporary folder for tools that write to the shared one and never clean up."""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def private_tempdir(prefix: str = "bids_harmony-ants-") -> Iterator[str]:
    """Send files made through ``tempfile`` to a private folder, removed afterwards.

    ``ants.atropos`` writes its posteriors (13 MB for Colin27) to names from ``tempfile.mktemp``
    and never deletes them, and takes no folder to write to. Not thread-safe: it swaps the
    process-wide ``tempfile.tempdir`` for the duration of the block.
    """
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        previous, tempfile.tempdir = tempfile.tempdir, scratch
        try:
            yield scratch
        finally:
            tempfile.tempdir = previous
