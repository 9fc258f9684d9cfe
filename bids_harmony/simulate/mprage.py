"""Steady-state MPRAGE signal (Mugler & Brookeman 1990; Deichmann et al. 2000).

One repetition of the preparation: an inversion pulse, a delay, a train of ``n`` small flip
angle excitations spaced by the echo spacing ``tau`` (one per partition, linear order, the
centre of k-space at the middle of the train), a recovery delay ``TD``, then the next
inversion. Longitudinal magnetisation ``M`` (in units of the equilibrium ``M0``) evolves as

- inversion: ``M -> -eta * M`` (``eta``: inversion efficiency, 0.96 for adiabatic pulses),
- free recovery over ``t``: ``M -> M * E + (1 - E)`` with ``E = exp(-t / T1)``,
- excitation: ``M -> M * cos(alpha)``.

Chaining one period gives ``M_end = A * M_start + B``; the steady state is
``M = B / (1 - A)``. The image intensity is that of the centre-of-k-space echo:
``S = PD * sin(alpha) * M_centre * exp(-TE / T2*)`` (magnitude). ``alpha`` is the local flip
angle, i.e. the nominal one times the relative transmit field B1+.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MprageProtocol:
    """Timing of one MPRAGE protocol (seconds and degrees, as BIDS writes them)."""

    repetition_time_preparation: float
    inversion_time: float
    echo_time: float
    flip_angle: float
    echo_spacing: float
    excitations_per_inversion: int
    #: ``"centre"`` (Siemens TI: inversion to the centre-of-k-space excitation) or
    #: ``"first"`` (the 1990s Vision MP-RAGE: inversion to the first excitation).
    inversion_time_reference: str = "centre"
    inversion_efficiency: float = 0.96

    @property
    def time_to_first_excitation(self) -> float:
        if self.inversion_time_reference == "first":
            return self.inversion_time
        return self.inversion_time - 0.5 * self.excitations_per_inversion * self.echo_spacing

    @property
    def recovery_delay(self) -> float:
        """TD: from the end of the excitation train to the next inversion."""
        train = self.excitations_per_inversion * self.echo_spacing
        return self.repetition_time_preparation - self.time_to_first_excitation - train

    def check(self) -> None:
        if self.time_to_first_excitation < 0 or self.recovery_delay < 0:
            raise ValueError(f"MPRAGE timing does not fit in TR: {self}")


def mprage_signal(
    t1: np.ndarray | float,
    t2star: np.ndarray | float,
    proton_density: np.ndarray | float,
    protocol: MprageProtocol,
    flip_scale: np.ndarray | float = 1.0,
) -> np.ndarray:
    """Magnitude signal (units of fully relaxed M0) for relaxation times in seconds.

    All array arguments broadcast; ``flip_scale`` is the relative B1+ (1 = nominal).
    """
    protocol.check()
    t1 = np.asarray(t1, dtype=np.float64)
    alpha = np.deg2rad(protocol.flip_angle) * np.asarray(flip_scale, dtype=np.float64)
    n = protocol.excitations_per_inversion
    centre = n // 2

    e_first = np.exp(-protocol.time_to_first_excitation / t1)
    e_spacing = np.exp(-protocol.echo_spacing / t1)
    e_recovery = np.exp(-protocol.recovery_delay / t1)
    decay = np.cos(alpha) * e_spacing  # per excitation interval

    def after_pulses(m_start, count):
        # k pulses of the train, each followed by tau of recovery, from m_start
        geometric = (1.0 - decay**count) / (1.0 - decay)
        return decay**count * m_start + (1.0 - e_spacing) * geometric

    eta = protocol.inversion_efficiency
    # M_end = A * M_start + B over one preparation period (M_start: just before inversion)
    a = -eta * e_first * decay**n * e_recovery
    b = e_recovery * after_pulses(1.0 - e_first, n) + (1.0 - e_recovery)
    m_start = b / (1.0 - a)
    m_first = -eta * m_start * e_first + (1.0 - e_first)
    m_centre = after_pulses(m_first, centre)
    signal = proton_density * np.sin(alpha) * m_centre * np.exp(-protocol.echo_time / np.asarray(t2star))
    return np.abs(signal)
