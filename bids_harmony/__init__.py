"""BlindHarmony as a BIDS-App: harmonize T1-weighted MRI to a target scanner."""
import os

from .__about__ import __version__

# ANTs (ITK) reads its thread count once, at first use, and sums in a fixed order only when
# single-threaded: that is what makes the rigid slice placement reproducible. bids_harmony
# parallelises across images (--nprocs) instead. An explicit user setting is respected.
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

__all__ = ["__version__"]
