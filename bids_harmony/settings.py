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

EDGE_TERMS = ("highpass", "sobel")
INITIALISATIONS = ("mean", "source")


def _setting(default: Any, help: str, **metadata: Any) -> Any:
    return field(default=default, metadata={"help": help, **metadata})


@dataclass(frozen=True)
class HarmonizationParams:
    """The optimisation's settings; defaults chosen by measurement (docs/harmonization.md)."""

    iterations: int = _setting(4, "alternations of fidelity step and likelihood step")
    alpha: float = _setting(1e-3, "latent shrink of the centred latent per iteration")
    alpha2: float = _setting(0.06, "latent shrink of the latent's mean per iteration")
    beta1: float = _setting(0.4, "correlation fidelity step (a fraction: 1 replaces the iterate's "
                            "centred part by the source's)")
    beta2: float = _setting(0.5, "edge fidelity step")
    edge: str = _setting("highpass", "edge term", choices=EDGE_TERMS)
    highpass_radius: float = _setting(0.05, "high-pass edge term: DCT frequencies of normalised "
                                      "radius below this are dropped")
    edge_threshold: float = _setting(0.1, "Sobel-sign edge term: edges above this share of the "
                                     "slice's largest gradient count")
    init: str = _setting("mean", "start from the mean target slice at the position, or the source",
                         choices=INITIALISATIONS)
    foreground_threshold: float = _setting(0.05, "source foreground: above this share of the "
                                           "slice's range")
    target_background: bool = _setting(True, "below the source foreground, keep the source's "
                                       "texture at the target's level (not in the paper; off gives "
                                       "the paper's output there)")
    batch_size: int = _setting(32, "slices optimised together", flag="--harmonize-batch-size")

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
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if _TYPES[item.type] is float and (not math.isfinite(value) or value < 0):
                raise SettingsError(f"harmonization setting {item.name} must be a non-negative number")

    def replace(self, **changes: Any) -> "HarmonizationParams":
        return self.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "HarmonizationParams":
        """Settings from a mapping (a sidecar, a saved configuration); unknown keys are refused."""
        unknown = set(values) - set(setting_names())
        if unknown:
            raise SettingsError(f"unknown harmonization setting(s): {', '.join(sorted(unknown))}")
        return cls(**values)


_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


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
    """One option per setting. Defaults stay unset on the command line (an option not given is
    absent from the namespace), so that only what the user typed replaces the defaults (or a
    method preset's values)."""
    group = parser.add_argument_group("BlindHarmony settings (docs/harmonization.md)")
    for item in setting_fields():
        kind = setting_type(item)
        help_text = f"{item.metadata['help']} (default: {item.default})"
        options: dict[str, Any] = {"dest": item.name, "default": argparse.SUPPRESS, "help": help_text}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = kind
            options["metavar"] = item.name.upper() if "choices" not in item.metadata else None
            if "choices" in item.metadata:
                options["choices"] = item.metadata["choices"]
        group.add_argument(flag_of(item), **options)


def settings_from_arguments(args: argparse.Namespace,
                            base: HarmonizationParams | None = None) -> HarmonizationParams:
    """``base`` (default: the defaults) with what the command line set."""
    changes = {name: getattr(args, name) for name in setting_names() if getattr(args, name, None) is not None}
    return (base or HarmonizationParams()).replace(**changes)
