"""Nipype interfaces: each wraps one core function, and passes files, never objects in memory."""
from .derivatives import DerivativesDataSink, HarmonizedSidecar, PublishDerivatives
from .harmonization import HarmonizeSlices, PrepareT1w, ReassembleT1w

__all__ = [
    "DerivativesDataSink",
    "HarmonizeSlices",
    "HarmonizedSidecar",
    "PrepareT1w",
    "PublishDerivatives",
    "ReassembleT1w",
]
