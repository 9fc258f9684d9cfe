"""atomic_write: a file appears whole or not at all."""
import os

import pytest

from bids_harmony.atomic import atomic_write


def test_a_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.pt"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as stream:
            stream.write(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(target, "w") as stream:
            stream.write("new")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


def test_a_finished_write_replaces_the_file_with_ordinary_permissions(tmp_path):
    target = tmp_path / "log.csv"
    target.write_text("old")
    with atomic_write(target, "w", newline="") as stream:
        stream.write("step\r\n1\r\n")
    assert target.read_bytes() == b"step\r\n1\r\n" and list(tmp_path.iterdir()) == [target]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
