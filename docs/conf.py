"""Sphinx configuration of the bids_harmony documentation.

Build it (warnings are errors, as in CI and ``tests/test_docs.py``)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NIPYPE_NO_ET", "1")  # importing the parsers must not phone home

import bids_harmony  # noqa: E402

project = "bids_harmony"
author = "The bids_harmony developers"
copyright = "the bids_harmony developers"
version = bids_harmony.__version__
release = bids_harmony.__version__

extensions = [
    "myst_parser",
    "sphinxarg.ext",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# Markdown: links between the pages' headings (`[...](qc.md#outputs)`) resolve.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

html_theme = "alabaster"
html_title = f"bids_harmony {release}"
html_static_path = []
html_theme_options = {
    "description": "Harmonize T1w MRI to one scanner with BlindHarmony, as a BIDS-App",
    "fixed_sidebar": True,
}
