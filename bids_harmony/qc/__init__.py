"""Quality control: tissue contrast, bias profile and (later) segmentation metrics."""
from .tissue import bias_profile, wm_gm_ratio

__all__ = ["bias_profile", "wm_gm_ratio"]
