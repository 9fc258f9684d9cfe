"""The site-effect figure of merit on numbers whose scanner share and spread are known."""
import math
from dataclasses import asdict

import numpy as np
import pytest

from bids_harmony.qc.site_effect import site_effect, site_effect_change


def _two_scanners(shift, spread, runs=20, seed=3):
    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.normal(0.0, spread, runs), rng.normal(shift, spread, runs)]) if spread else \
        np.repeat([0.0, shift], runs)
    return list(values), ["a"] * runs + ["b"] * runs


def test_scanners_apart_with_no_spread_explain_everything():
    effect = site_effect([0.0, 0.0, 0.0, 1.0, 1.0, 1.0], ["a", "a", "a", "b", "b", "b"])
    assert effect.share == 1.0 and effect.share_interval == (1.0, 1.0)
    assert effect.within_sd == 0.0 and effect.within_cv == 0.0 and effect.notes == ()


def test_known_share_and_pooled_spread():
    # scanner means 0 and 2 around a mean of 1, each run 1 from its scanner's: between 4, within 4
    effect = site_effect([-1.0, 1.0, 1.0, 3.0], ["a", "a", "b", "b"])
    assert effect.share == pytest.approx(0.5)
    assert effect.within_sd == pytest.approx(math.sqrt(4 / 2))  # within SS 4 over 4 runs - 2 scanners
    assert effect.within_cv == pytest.approx(math.sqrt(2) / 1.0)  # over the mean of all runs, 1


def test_identical_distributions_share_about_nothing():
    values, scanners = _two_scanners(0.0, 1.0, runs=200)
    effect = site_effect(values, scanners)
    assert effect.share < 0.02
    assert effect.within_sd == pytest.approx(1.0, abs=0.1)


def test_the_interval_holds_the_estimate_and_is_reproducible():
    values, scanners = _two_scanners(1.0, 1.0, runs=15)
    effect = site_effect(values, scanners)
    low, high = effect.share_interval
    assert 0.0 <= low < effect.share < high <= 1.0
    assert site_effect(values, scanners) == effect  # fixed seed
    assert site_effect(values, scanners, seed=1).share_interval != effect.share_interval


def test_harmonization_lowering_the_share_and_keeping_the_spread():
    rng = np.random.default_rng(5)
    anatomy = rng.normal(0.0, 0.3, 30)
    scanners = ["a"] * 10 + ["b"] * 10 + ["c"] * 10
    offsets = np.repeat([-1.0, 0.0, 1.0], 10)
    change = site_effect_change(list(anatomy + offsets), list(anatomy + 0.05 * offsets), scanners)
    assert change.before.share > 0.8 and change.after.share < 0.2
    assert change.share_change == pytest.approx(change.after.share - change.before.share)
    assert change.share_change_interval[1] < 0
    assert change.after.within_sd == pytest.approx(change.before.within_sd)


def test_a_method_that_flattens_every_image_cannot_win():
    values, scanners = _two_scanners(1.0, 0.5, runs=10)
    change = site_effect_change(values, [4.2] * len(values), scanners)
    assert change.after.share is None and change.share_change is None
    assert change.after.within_sd == 0.0
    assert "no variance" in " ".join(change.after.notes)


def test_one_scanner_only_has_no_share_but_a_spread():
    effect = site_effect([1.0, 2.0, 3.0], ["a", "a", "a"])
    assert effect.share is None and effect.share_interval is None
    assert effect.within_sd == pytest.approx(1.0) and effect.within_cv == pytest.approx(0.5)
    assert effect.notes == ("one scanner only: there is no between-scanner variance to measure",)


def test_a_scanner_with_one_run_is_named_and_scanners_of_one_run_only_have_nothing():
    effect = site_effect([1.0, 2.0, 5.0], ["a", "a", "b"])
    assert effect.share == pytest.approx(1 - 0.5 / (78 / 9))  # within SS 0.5 of a total 78/9
    assert any(note.startswith("b: one run") for note in effect.notes)
    lonely = site_effect([1.0, 2.0, 5.0], ["a", "b", "c"])
    assert lonely.share is None and lonely.within_sd is None and lonely.within_cv is None
    assert "every scanner has one run" in lonely.notes[0]


def test_missing_values_are_left_out_and_nothing_is_nan():
    effect = site_effect([0.0, None, float("nan"), 1.0, 1.0], ["a", "a", "a", "b", "b"])
    assert effect.runs == 3 and effect.scanners == 2
    assert asdict(site_effect([None, None], ["a", "b"])) == {
        "runs": 0, "scanners": 0, "share": None, "share_interval": None, "within_sd": None, "within_cv": None,
        "notes": ("fewer than two runs have a value",)}
    change = site_effect_change([0.0, 0.0, 1.0, None], [0.1, 0.2, 0.9, 1.0], ["a", "a", "b", "b"])
    assert change.before.runs == change.after.runs == 3  # only runs with both values
    for value in _numbers(asdict(change)):
        assert math.isfinite(value)


def test_a_zero_mean_has_no_coefficient_of_variation():
    effect = site_effect([-1.0, 1.0, -1.0, 1.0], ["a", "a", "b", "b"])
    assert effect.share == 0.0 and effect.within_cv is None
    assert "the mean is 0: no coefficient of variation" in effect.notes


def _numbers(content):
    if isinstance(content, dict):
        for value in content.values():
            yield from _numbers(value)
    elif isinstance(content, (list, tuple)):
        for value in content:
            yield from _numbers(value)
    elif isinstance(content, float):
        yield content
