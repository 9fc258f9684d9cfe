"""The methods the benchmark compares: no harmonization, histogram matching, BlindHarmony and its ablations."""
from __future__ import annotations

from ..harmonize import HarmonizationParams, harmonize_slices
from ..model.file import HarmonyModel
from .baselines import histogram_match
from .protocol import Method

# each ablation switches one term of the optimisation off (the paper's ablation study)
ABLATIONS = {"alpha=0": {"alpha": 0.0}, "beta1=0": {"beta1": 0.0}, "beta2=0": {"beta2": 0.0}}


def benchmark_methods(model: HarmonyModel, params: HarmonizationParams, ablations: bool = True) -> dict[str, Method]:
    """Methods by name, in the order of the tables' columns.

    Histogram matching uses the model's own target quantiles, so both methods see the same
    target statistics; the ablations use ``params`` with one term set to zero.
    """
    methods = {
        "none": lambda slices, positions: slices,
        "histogram matching": lambda slices, positions: histogram_match(slices, positions, model.quantiles),
        "BlindHarmony": lambda slices, positions: harmonize_slices(slices, model, positions, params),
    }
    if ablations:
        for name, change in ABLATIONS.items():
            methods[f"BlindHarmony {name}"] = (
                lambda slices, positions, ablated=params.replace(**change):
                harmonize_slices(slices, model, positions, ablated))
    return methods
