"""The harmonization settings: one definition for the core, the command lines and Nipype.

Plain Python (no torch), so that ``--help`` and building a workflow stay fast. Each field's
metadata holds its help text (and, where it differs from the field name, its command-line
flag); :func:`add_settings_arguments` and the Nipype interface's input spec are generated
from the fields, never copied by hand.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import SettingsError

#: The fidelity term's gradient. ``correlation``: Pearson correlation, normalised so that beta1 is a
#: step fraction (ours); ``batch-correlation``: the authors' May-2023 gradient as written (a
#: Pearson-like correlation whose pixel count is the whole batch's); ``cosine``: the camera-ready
#: gradient of the uncentred cosine similarity. The last two take the authors' beta1 (1000).
FIDELITY_TERMS = ("correlation", "batch-correlation", "cosine")
#: ``highpass``: DCT high-pass agreement (May 2023); ``sobel-tv``: the camera-ready Sobel total
#: variation of y in the flat parts of x; ``sobel-sign``: Sobel-gradient sign agreement on x's strong
#: edges (ours, not the authors')
EDGE_TERMS = ("highpass", "sobel-tv", "sobel-sign")
#: ``mean``: the position's mean target slice masked by the source foreground (ours);
#: ``mean-unmasked``: that slice as it is (the authors' real-data and camera-ready scripts);
#: ``global-mean-masked``: the mean over all positions, kept where the source is above its 45th
#: percentile (the authors' May-2023 simulated-data script); ``source``: the source slice
INITIALISATIONS = ("mean", "mean-unmasked", "global-mean-masked", "source")
#: ``fidelity``: the last fidelity step (May 2023); ``flow``: the last flow output (camera-ready)
RESULTS = ("fidelity", "flow")


def _setting(default: Any, help: str, **metadata: Any) -> Any:
    return field(default=default, metadata={"help": help, **metadata})


@dataclass(frozen=True)
class HarmonizationParams:
    """The optimisation's settings. The defaults are the ``bids_harmony`` method, chosen by
    measurement (docs/harmonization.md); :meth:`preset` gives the authors' two loops."""

    iterations: int = _setting(4, "alternations of fidelity step and likelihood step")
    alpha: float = _setting(1e-3, "latent shrink of the centred latent per iteration")
    alpha2: float = _setting(0.06, "latent shrink of the latent's mean per iteration (alpha2 = alpha "
                             "shrinks the whole latent, as the camera-ready loop does)")
    beta1: float = _setting(0.4, "fidelity step; its scale depends on --fidelity: a fraction for "
                            "correlation (1 replaces the iterate's centred part by the source's), "
                            "about 1000 for the authors' batch-correlation and cosine gradients")
    fidelity: str = _setting("correlation", "fidelity term's gradient (correlation: ours, normalised; "
                             "batch-correlation: the authors' May-2023 one; cosine: camera-ready)",
                             choices=FIDELITY_TERMS)
    beta2: float = _setting(0.5, "edge step (about 0.5 for highpass, 0.001 for the Sobel terms)")
    edge: str = _setting("highpass", "edge term (highpass: May 2023; sobel-tv: camera-ready; "
                         "sobel-sign: ours)", choices=EDGE_TERMS)
    highpass_radius: float = _setting(0.05, "high-pass edge term: DCT frequencies of normalised "
                                      "radius below this are dropped")
    edge_percentile: float = _setting(30.0, "Sobel-TV edge term: the source's flat parts are its "
                                      "pixels below this percentile of the Sobel magnitude (per slice and "
                                      "direction)")
    edge_threshold: float = _setting(0.1, "Sobel-sign edge term: edges above this share of the "
                                     "slice's largest gradient count")
    init: str = _setting("mean", "start image (mean: the position's mean target slice, masked by the "
                         "source foreground; mean-unmasked; global-mean-masked; source)",
                         choices=INITIALISATIONS)
    result: str = _setting("fidelity", "the result: the last fidelity step or the last flow output",
                           choices=RESULTS)
    foreground_threshold: float = _setting(0.05, "source foreground: above this share of the "
                                           "slice's range")
    target_background: bool = _setting(True, "below the source foreground, keep the source's "
                                       "texture at the target's level (ours, not in the paper)")
    anchor_level: bool = _setting(True, "volume step: put each harmonized slice's brighter half at "
                                  "the source slice's level (ours, not in the paper)")
    smooth_across_slices: bool = _setting(True, "volume step: smooth the coarse part of the change "
                                          "across neighbouring slices (ours, not in the paper)")
    batch_size: int = _setting(32, "slices optimised together (it changes the result only with "
                               "batch-correlation)", flag="--harmonize-batch-size")

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            expected = _TYPES[item.type]
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, item.name, float(value))
            elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise SettingsError(f"harmonization setting {item.name} must be {expected.__name__}, "
                                    f"got {value!r}")
            choices = item.metadata.get("choices")
            if choices and value not in choices:
                raise SettingsError(f"harmonization setting {item.name} must be one of {choices}, "
                                    f"got {value!r}")
        if self.iterations < 1 or self.batch_size < 1:
            raise SettingsError("harmonization settings iterations and batch_size must be at least 1")
        if self.edge_percentile > 100:
            raise SettingsError("harmonization setting edge_percentile must be at most 100")
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if _TYPES[item.type] is float and (not math.isfinite(value) or value < 0):
                raise SettingsError(f"harmonization setting {item.name} must be a non-negative number")

    def replace(self, **changes: Any) -> "HarmonizationParams":
        return self.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def optimisation_settings(self) -> dict[str, Any]:
        """What the slices' optimisation and the level anchoring use (the harmonization node's)."""
        return {name: value for name, value in self.to_dict().items() if name not in REASSEMBLE_SETTINGS}

    def reassemble_settings(self) -> dict[str, Any]:
        """What the last step, back to the native grid, uses (the reassembly node's)."""
        return {name: getattr(self, name) for name in REASSEMBLE_SETTINGS}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "HarmonizationParams":
        """Settings from a mapping (a sidecar, a saved configuration); unknown keys are refused."""
        unknown = set(values) - set(setting_names())
        if unknown:
            raise SettingsError(f"unknown harmonization setting(s): {', '.join(sorted(unknown))}")
        return cls(**values)

    @classmethod
    def preset(cls, name: str) -> "HarmonizationParams":
        """The settings of a named method (:data:`METHODS`): ``bids_harmony`` (the defaults),
        ``arxiv-v1`` (the authors' May-2023 loop as they ran it on real data) or ``camera-ready``
        (their final loop). Change one with :meth:`replace`, e.g. an ablation:
        ``HarmonizationParams.preset("camera-ready").replace(beta1=0)``."""
        if name not in METHODS:
            raise SettingsError(f"unknown method {name!r} (known: {', '.join(METHODS)})")
        return cls(**METHODS[name])

    def additions(self) -> list[str]:
        """Our additions to the paper's method that these settings switch on."""
        return [name for name in OUR_ADDITIONS if getattr(self, name)]

    def method(self) -> tuple[str, dict[str, Any]]:
        """The method these settings are closest to, and what differs from it (name -> value)."""
        values = self.to_dict()
        differences = {name: {key: value for key, value in values.items()
                              if value != getattr(self.preset(name), key)} for name in METHODS}
        name = min(METHODS, key=lambda method: len(differences[method]))
        return name, differences[name]


_TYPES = {"int": int, "float": float, "str": str, "bool": bool}

#: switches of steps that are ours, not the paper's (named wherever they are on)
OUR_ADDITIONS = ("target_background", "anchor_level", "smooth_across_slices")
#: the settings of the last step, back to the native grid (the others are the optimisation's)
REASSEMBLE_SETTINGS = ("smooth_across_slices",)
DEFAULT_METHOD = "bids_harmony"
#: Each named method's settings, on top of the defaults (the ``bids_harmony`` method); docs/methods.md
#: gives, for every step, the file, lines and commit of the authors' code it follows.
METHODS: dict[str, dict[str, Any]] = {
    "bids_harmony": {},
    # the May-2023 real-data script: the position's mean slice as the start, 5 iterations, batches of
    # 50 (their correlation gradient counts the batch's pixels), the last fidelity step
    "arxiv-v1": dict(iterations=5, alpha=1e-3, alpha2=0.06, beta1=1000.0, fidelity="batch-correlation",
                     beta2=0.5, edge="highpass", highpass_radius=0.05, init="mean-unmasked", result="fidelity",
                     target_background=False, anchor_level=False, smooth_across_slices=False, batch_size=50),
    # the camera-ready loop: cosine fidelity, Sobel total variation in the flat parts of x,
    # z <- (1 - alpha) z (alpha2 = alpha), 10 iterations, the last flow output
    "camera-ready": dict(iterations=10, alpha=1e-3, alpha2=1e-3, beta1=1000.0, fidelity="cosine",
                         beta2=1e-3, edge="sobel-tv", edge_percentile=30.0, foreground_threshold=0.05,
                         init="mean-unmasked", result="flow", target_background=False,
                         anchor_level=False, smooth_across_slices=False, batch_size=50),
}


def setting_names() -> list[str]:
    return [item.name for item in dataclasses.fields(HarmonizationParams)]


def setting_fields() -> list[dataclasses.Field]:
    """Each setting's field: name, ``type`` (its name as a string), default, metadata."""
    return list(dataclasses.fields(HarmonizationParams))


def setting_type(item: dataclasses.Field) -> type:
    return _TYPES[item.type]


def flag_of(item: dataclasses.Field) -> str:
    return item.metadata.get("flag", "--" + item.name.replace("_", "-"))


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """``--method`` and one option per setting. Settings stay unset on the command line (an
    option not given is absent from the namespace), so that only what the user typed changes the
    method's values."""
    group = parser.add_argument_group("BlindHarmony settings (docs/harmonization.md, docs/methods.md)")
    group.add_argument("--method", choices=list(METHODS), default=DEFAULT_METHOD,
                       help="the method whose settings the options below change: bids_harmony (ours, "
                       "the defaults shown), arxiv-v1 (the authors' May-2023 loop) or camera-ready "
                       f"(their final loop) (default: {DEFAULT_METHOD})")
    for item in setting_fields():
        kind = setting_type(item)
        help_text = f"{item.metadata['help']} (bids_harmony: {item.default})"
        options: dict[str, Any] = {"dest": item.name, "default": argparse.SUPPRESS, "help": help_text}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = kind
            options["metavar"] = item.name.upper() if "choices" not in item.metadata else None
            if "choices" in item.metadata:
                options["choices"] = item.metadata["choices"]
        group.add_argument(flag_of(item), **options)


def settings_from_arguments(args: argparse.Namespace) -> HarmonizationParams:
    """``--method``'s settings with what the command line set."""
    changes = {name: getattr(args, name) for name in setting_names() if getattr(args, name, None) is not None}
    return HarmonizationParams.preset(getattr(args, "method", DEFAULT_METHOD)).replace(**changes)
