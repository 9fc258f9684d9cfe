"""Tissue classes of the simulated head and their relaxation parameters.

Every anatomy is reduced to fractions of the six classes below; the MR signal of a voxel is
the fraction-weighted sum of the classes' signals (partial-volume mixing of magnetisation).
Whatever is left over (1 - sum of fractions) is air and gives no signal.

Parameters depend on the main field B0. Sources (see docs/simulation.md for the discussion):

- Brain T1: Wright et al. 2008, MAGMA 21:121 (MPRAGE-based T1 in four subjects):
  WM 646 / 838 ms, cortical GM 1197 / 1607 ms at 1.5 / 3 T.
- CSF T1: Lu et al. 2005, JMRI 22:13: about 4.1-4.2 s, nearly field independent.
- Brain T2*: Peters et al. 2007, MRI 25:748: WM 66.2 / 53.2 ms, GM 84.0 / 66.0 ms at 1.5 / 3 T.
- Proton density (water content, relative to CSF): WM 0.69, GM 0.80 (Neeb et al. 2006,
  NeuroImage 31:1156).
- Subcutaneous fat and skeletal muscle T1: de Bazelaire et al. 2004, Radiology 230:652:
  fat 343 / 382 ms, muscle 1008 / 1412 ms at 1.5 / 3 T.
- Fat, muscle and bone T2* and PD are rounded textbook values; with TE of 3-4 ms they move
  the signal by a few percent at most.
"""
from __future__ import annotations

from dataclasses import dataclass

FIELD_STRENGTHS = (1.5, 3.0)


@dataclass(frozen=True)
class Tissue:
    """One tissue class: proton density and relaxation times at 1.5 T and 3 T."""

    name: str
    proton_density: float
    t1_ms: tuple[float, float]
    t2star_ms: tuple[float, float]

    def t1_at(self, field_strength: float) -> float:
        return self.t1_ms[_field_index(field_strength)]

    def t2star_at(self, field_strength: float) -> float:
        return self.t2star_ms[_field_index(field_strength)]


def _field_index(field_strength: float) -> int:
    for index, known in enumerate(FIELD_STRENGTHS):
        if abs(field_strength - known) < 1e-6:
            return index
    raise ValueError(f"no tissue parameters for {field_strength} T (known: {FIELD_STRENGTHS})")


CSF = Tissue("CSF", 1.00, (4070.0, 4163.0), (1000.0, 500.0))
GM = Tissue("GM", 0.80, (1197.0, 1607.0), (84.0, 66.0))
WM = Tissue("WM", 0.69, (646.0, 838.0), (66.2, 53.2))
FAT = Tissue("fat", 0.90, (343.0, 382.0), (40.0, 30.0))
MUSCLE = Tissue("muscle", 0.75, (1008.0, 1412.0), (30.0, 23.0))
BONE = Tissue("bone", 0.10, (500.0, 550.0), (2.0, 1.0))

#: The order of the channels of every fraction map.
TISSUES: tuple[Tissue, ...] = (CSF, GM, WM, FAT, MUSCLE, BONE)
TISSUE_INDEX = {tissue.name: index for index, tissue in enumerate(TISSUES)}
BRAIN_TISSUES = ("CSF", "GM", "WM")
HEAD_TISSUES = ("fat", "muscle", "bone")

#: Discrete labels written as ``dseg`` (0 is background / air).
LABELS = {1: "CSF", 2: "GM", 3: "WM", 4: "non-brain"}
