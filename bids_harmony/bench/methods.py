"""The methods the benchmark compares: no harmonization, histogram matching, BlindHarmony as
named methods (ours and the authors' camera-ready loop) and the seed's ablation."""
from __future__ import annotations

from typing import Iterable

from ..harmonize import HarmonizationParams, harmonize_slices
from ..model.file import HarmonyModel
from .baselines import histogram_match
from .protocol import Method

#: each ablation switches one term of the optimisation off (the seed's Table 3); alpha = 0 stops
#: the latent shrink altogether (alpha2 too, which the camera-ready loop does not have)
ABLATIONS = {"alpha=0": {"alpha": 0.0, "alpha2": 0.0}, "beta1=0": {"beta1": 0.0}, "beta2=0": {"beta2": 0.0}}
#: what the benchmark puts beside the chosen method, and ablates, unless told otherwise
DEFAULT_COMPARED = ("camera-ready",)
DEFAULT_ABLATED = "camera-ready"


def method_label(params: HarmonizationParams) -> str:
    """A column's name: the method's, with what the settings change from it."""
    name, changed = params.method()
    return name if not changed else f"{name} ({', '.join(f'{key}={value}' for key, value in changed.items())})"


def _harmonizer(model: HarmonyModel, params: HarmonizationParams) -> Method:
    return lambda slices, positions: harmonize_slices(slices, model, positions, params)


def benchmark_methods(model: HarmonyModel, params: HarmonizationParams,
                      compared: Iterable[str] = DEFAULT_COMPARED,
                      ablated: str | None = DEFAULT_ABLATED) -> dict[str, HarmonizationParams | None]:
    """The settings of every column by name, in the tables' order (None: not BlindHarmony):
    no harmonization, histogram matching, ``params``, the ``compared`` methods as their presets
    set them, and the seed's ablations of the ``ablated`` method's preset."""
    columns: dict[str, HarmonizationParams | None] = {"none": None, "histogram matching": None,
                                                      method_label(params): params}
    for name in compared:
        columns.setdefault(method_label(HarmonizationParams.preset(name)), HarmonizationParams.preset(name))
    if ablated:
        for ablation, change in ABLATIONS.items():
            columns[f"{ablated} {ablation}"] = HarmonizationParams.preset(ablated).replace(**change)
    return columns


def method_functions(model: HarmonyModel, columns: dict[str, HarmonizationParams | None]) -> dict[str, Method]:
    """Each column's function of (slices, positions). Histogram matching uses the model's own
    target quantiles, so that it and BlindHarmony see the same target statistics."""
    functions: dict[str, Method] = {"none": lambda slices, positions: slices,
                                    "histogram matching": lambda slices, positions: histogram_match(
                                        slices, positions, model.quantiles)}
    return {name: functions[name] if params is None else _harmonizer(model, params)
            for name, params in columns.items()}
