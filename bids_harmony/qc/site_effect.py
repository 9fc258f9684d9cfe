"""How much of a QC metric's variation the scanner explains, and how much is left within each scanner.

Harmonization should lower the *scanner share* of a metric's variance (eta squared: the
between-scanner sum of squares over the total) while *keeping* the within-scanner spread,
which is anatomy: subjects differ, and a harmonized image should still show it. A method that
flattens every image to the same appearance removes the scanner effect and the anatomy with it;
judged on the share alone it would win, judged on both it cannot (its within-scanner spread
falls to zero, and with no variance left its share is not even defined). So the two numbers are
reported side by side, before and after, on the same runs.

Eta squared overestimates the scanner share with few runs per scanner (with no scanner effect
at all it is about ``(scanners - 1) / (runs - 1)`` on average). Before and after are measured on
the same runs and scanners, so the bias is common to both and their comparison is fair; the
bootstrap interval (runs resampled within each scanner, the same draws for before and after)
says how much the estimate would move with other subjects from the same scanners. Resampling
repeats runs, which shrinks the within-scanner spread, so the draws lean high: with no scanner
effect at all, a near-zero estimate can sit just below its interval.

Arrays in, numbers out: what cannot be measured is ``None`` with a note saying why, never NaN.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

#: Bootstrap draws and their seed: the same data give the same interval.
DRAWS = 2000
SEED = 0
CONFIDENCE = 0.95
#: Sums of squares below this, relative to the values' magnitude, are floating-point round-off.
ROUND_OFF = 1e-12


@dataclass(frozen=True)
class SiteEffect:
    """One metric's scanner share (with its bootstrap interval) and within-scanner spread."""

    #: runs with a value, and the scanners they came from
    runs: int
    scanners: int
    #: between-scanner over total sum of squares (eta squared), in [0, 1]
    share: float | None
    share_interval: tuple[float, float] | None
    #: pooled within-scanner standard deviation, and over the mean of all runs (coefficient of variation)
    within_sd: float | None
    within_cv: float | None
    #: what could not be measured, and why
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SiteEffectChange:
    """A metric's site effect before and after harmonization, on the runs that have both values."""

    before: SiteEffect
    after: SiteEffect
    #: after minus before, with the interval of the same paired bootstrap draws
    share_change: float | None
    share_change_interval: tuple[float, float] | None


def _groups(scanners: Sequence[str]) -> tuple[list[str], list[np.ndarray]]:
    names = sorted(set(scanners))
    labels = np.asarray(scanners, dtype=object)
    return names, [np.flatnonzero(labels == name) for name in names]


def _clean(sum_of_squares, runs: int, magnitude):
    """A sum of squares, with what is only round-off (identical values) set to exactly 0."""
    return np.where(sum_of_squares <= (ROUND_OFF * magnitude) ** 2 * runs, 0.0, sum_of_squares)


def _sums_of_squares(values: np.ndarray, members: list[np.ndarray]) -> tuple[float, float]:
    """Between-scanner and within-scanner sums of squares."""
    grand = values.mean()
    between = sum(len(index) * (values[index].mean() - grand) ** 2 for index in members)
    within = sum(float(np.sum((values[index] - values[index].mean()) ** 2)) for index in members)
    magnitude = float(np.max(np.abs(values)))
    return float(_clean(between, len(values), magnitude)), float(_clean(within, len(values), magnitude))


def _bootstrap_shares(rows: np.ndarray, members: list[np.ndarray], draws: int, seed: int) -> np.ndarray:
    """Eta squared of each row of ``rows`` (metrics x runs) over ``draws`` resamplings of the runs
    within each scanner, the same resampling for every row; NaN where a draw has no variance
    (internal only: callers drop those draws)."""
    rng = np.random.default_rng(seed)
    picks = [index[rng.integers(0, len(index), size=(draws, len(index)))] for index in members]
    sampled = [rows[:, pick] for pick in picks]  # each (metrics, draws, runs of that scanner)
    means = np.stack([sample.mean(axis=2) for sample in sampled], axis=2)  # (metrics, draws, scanners)
    sizes = np.array([len(index) for index in members], dtype=np.float64)
    grand = (means * sizes).sum(axis=2, keepdims=True) / sizes.sum()
    magnitude = np.max(np.abs(rows), axis=1, keepdims=True)
    runs = int(sizes.sum())
    between = _clean(((means - grand) ** 2 * sizes).sum(axis=2), runs, magnitude)
    within = _clean(sum(((sample - sample.mean(axis=2, keepdims=True)) ** 2).sum(axis=2) for sample in sampled),
                    runs, magnitude)
    total = between + within
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, between / total, np.nan)


def _interval(draws: np.ndarray, confidence: float) -> tuple[float, float] | None:
    kept = draws[np.isfinite(draws)]
    if not len(kept):
        return None
    tail = 50.0 * (1.0 - confidence)
    low, high = np.percentile(kept, [tail, 100.0 - tail])
    return float(low), float(high)


def _finite(values: Sequence[float | None]) -> np.ndarray:
    """True where a value was measured (not ``None``, finite)."""
    return np.array([value is not None and bool(np.isfinite(value)) for value in values], dtype=bool)


def _estimate(values: np.ndarray, scanners: Sequence[str]) -> tuple[SiteEffect, list[np.ndarray] | None]:
    """The point estimates; the scanners' run indices when a bootstrap interval is meaningful."""
    names, members = _groups(scanners)
    notes: list[str] = []
    runs, count = len(values), len(names)
    if runs < 2:
        return SiteEffect(runs, count, None, None, None, None, ("fewer than two runs have a value",)), None
    between, within = _sums_of_squares(values, members)
    degrees = runs - count  # within-scanner degrees of freedom: only scanners with two runs or more add any
    single = [name for name, index in zip(names, members) if len(index) == 1]
    within_sd = within_cv = None
    if degrees > 0:
        within_sd = float(np.sqrt(within / degrees))
        mean = float(values.mean())
        if abs(mean) > ROUND_OFF * float(np.max(np.abs(values))):
            within_cv = within_sd / abs(mean)
        else:
            notes.append("the mean is 0: no coefficient of variation")
    share = None
    if count < 2:
        notes.append("one scanner only: there is no between-scanner variance to measure")
    elif degrees == 0:
        notes.append("every scanner has one run: scanner and subject cannot be told apart")
    elif between + within == 0:
        notes.append("every run has the same value: there is no variance to share out")
    else:
        share = between / (between + within)
    if single and degrees > 0:
        notes.append(f"{', '.join(single)}: one run, so no within-scanner spread there, and the interval "
                     "leaves out its sampling variability")
    effect = SiteEffect(runs, count, share, None, within_sd, within_cv, tuple(notes))
    return effect, (members if share is not None else None)


def site_effect(values: Sequence[float | None], scanners: Sequence[str], *, draws: int = DRAWS, seed: int = SEED,
                confidence: float = CONFIDENCE) -> SiteEffect:
    """The scanner share of ``values`` (one per run; ``None`` where not measured) with its
    bootstrap percentile interval, and the pooled within-scanner spread; ``scanners`` names
    each run's scanner."""
    if len(values) != len(scanners):
        raise ValueError(f"{len(values)} values but {len(scanners)} scanners")
    measured = _finite(values)
    kept = np.array([value for value, good in zip(values, measured) if good], dtype=np.float64)
    names = [scanner for scanner, good in zip(scanners, measured) if good]
    effect, members = _estimate(kept, names)
    if members is None:
        return effect
    shares = _bootstrap_shares(kept[None, :], members, draws, seed)[0]
    return replace(effect, share_interval=_interval(shares, confidence))


def site_effect_change(before: Sequence[float | None], after: Sequence[float | None], scanners: Sequence[str], *,
                       draws: int = DRAWS, seed: int = SEED, confidence: float = CONFIDENCE) -> SiteEffectChange:
    """The site effect of a metric before and after harmonization, on the runs measured in both
    (so the two are comparable), with the interval of the share's change from paired draws."""
    if not len(before) == len(after) == len(scanners):
        raise ValueError(f"{len(before)} values before, {len(after)} after and {len(scanners)} scanners")
    measured = _finite(before) & _finite(after)
    names = [scanner for scanner, good in zip(scanners, measured) if good]
    rows = np.array([[value for value, good in zip(series, measured) if good] for series in (before, after)],
                    dtype=np.float64).reshape(2, -1)
    (first, first_members), (second, second_members) = (_estimate(row, names) for row in rows)
    if first_members is None and second_members is None:
        return SiteEffectChange(first, second, None, None)
    members = first_members or second_members
    shares = _bootstrap_shares(rows, members, draws, seed)
    effects = [replace(effect, share_interval=_interval(row, confidence))
               if effect.share is not None else effect for effect, row in zip((first, second), shares)]
    if first.share is None or second.share is None:
        return SiteEffectChange(effects[0], effects[1], None, None)
    return SiteEffectChange(effects[0], effects[1], second.share - first.share,
                            _interval(shares[1] - shares[0], confidence))
