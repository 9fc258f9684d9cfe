"""The BlindHarmony flow model: architecture, presets and the flow's input convention."""
from .architecture import (
    PRESETS,
    FlowConfig,
    bits_per_dim,
    build_flow,
    count_parameters,
    from_flow_output,
    to_flow_input,
)

__all__ = [
    "PRESETS",
    "FlowConfig",
    "bits_per_dim",
    "build_flow",
    "count_parameters",
    "from_flow_output",
    "to_flow_input",
]
