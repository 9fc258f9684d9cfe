"""BlindHarmony as a BIDS-App: harmonize T1-weighted MRI to a target scanner."""
from .__about__ import __version__

__all__ = ["__version__"]
