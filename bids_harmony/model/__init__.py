"""The BlindHarmony flow model: architecture, presets, input convention and model files."""
from .architecture import (
    PER_LEVEL_FIELDS,
    PRESETS,
    FlowConfig,
    bits_per_dim,
    build_flow,
    count_parameters,
    from_flow_output,
    to_flow_input,
)
from .file import HarmonyModel, bundled_model_path, load_model, save_model

__all__ = [
    "PER_LEVEL_FIELDS",
    "PRESETS",
    "FlowConfig",
    "HarmonyModel",
    "bits_per_dim",
    "build_flow",
    "bundled_model_path",
    "count_parameters",
    "from_flow_output",
    "load_model",
    "save_model",
    "to_flow_input",
]
