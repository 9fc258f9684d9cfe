"""Anatomy sources: real brains turned into plausible tissue fractions."""
import os
import tempfile

import numpy as np
import pytest

from bids_harmony.errors import InputError
from bids_harmony.simulate.anatomy import SOURCES, _fingerprint, available_anatomies, cache_dir, load_anatomy
from bids_harmony.simulate.tissues import TISSUE_INDEX

# CI installs every source (Debian mricron-data included); a missing one is then a failure.
REQUIRE_ALL = os.environ.get("BIDS_HARMONY_REQUIRE_ALL_ANATOMIES") == "1"


def test_three_distinct_anatomies_are_known_and_available():
    status = available_anatomies()
    assert set(status) == set(SOURCES) and len(SOURCES) >= 3
    missing = {name: reason for name, reason in status.items() if reason is not None}
    if REQUIRE_ALL:
        assert not missing
    assert status["icbm152"] is None and status["fsaverage"] is None


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_tissue_fractions_are_plausible(name):
    if available_anatomies()[name] is not None and not REQUIRE_ALL:
        pytest.skip(available_anatomies()[name])
    anatomy = load_anatomy(name)
    fractions = anatomy.fractions
    assert fractions.min() >= 0.0 and fractions.sum(0).max() <= 1.0 + 1e-3
    voxel_ml = abs(np.linalg.det(anatomy.affine[:3, :3])) / 1000.0
    volume = {tissue: fractions[index].sum() * voxel_ml for tissue, index in TISSUE_INDEX.items()}
    brain = volume["CSF"] + volume["GM"] + volume["WM"]
    # adult brains: intracranial ~1.2-1.9 L, GM 0.5-0.95 L, WM 0.35-0.75 L
    assert 1000 < brain < 2100, volume
    assert 450 < volume["GM"] < 1000, volume
    assert 300 < volume["WM"] < 800, volume
    assert volume["fat"] > 50 and volume["muscle"] > 50, volume
    labels = anatomy.labels()
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4}
    # WM lies inside the head, surrounded by grey matter and CSF, not at the border of the grid
    wm = np.argwhere(labels == 3)
    assert wm.min() > 5 and (np.asarray(labels.shape) - wm.max(0)).min() > 5


def test_unknown_anatomy_is_refused():
    with pytest.raises(InputError, match="unknown anatomy 'nope'"):
        load_anatomy("nope")


def test_deriving_colin27_is_reproducible_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    """ants.atropos seeds its k-means from the clock and keeps its posteriors in the temporary
    folder, unless told otherwise. A derivation now matches the cached one (derived earlier in
    the session, or by an earlier run) to the cache's uint8 level."""
    if available_anatomies()["colin27"] is not None and not REQUIRE_ALL:
        pytest.skip(available_anatomies()["colin27"])
    source = SOURCES["colin27"]
    load_anatomy("colin27")  # derives and caches it if no earlier test or run did
    with np.load(cache_dir() / "anatomy" / f"colin27-{_fingerprint(source.files())}.npz") as stored:
        cached = stored["fractions"]
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    derived, _ = source.derive(source.files())
    assert derived.shape[0] == len(TISSUE_INDEX)
    assert np.array_equal(np.round(derived * 255.0).astype(np.uint8), cached)
    assert list(tmp_path.iterdir()) == [] and tempfile.tempdir == str(tmp_path)
