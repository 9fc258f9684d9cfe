"""Native T1w <-> the model's grid of axial slices: one code path for every command.

The grid is a box of ``H x W x n_positions`` voxels of ``resolution_mm`` (1.2 mm, as the
paper), axis-aligned in the space of the MNI152NLin2009cSym template. Each image is placed
in it by a rigid registration (ANTs, 6 degrees of freedom, on 3 mm copies) of the head to the
template, so **slice position k is the axial plane z = z0 + k * resolution in template
millimetres** for every subject: comparable anatomy whatever the field of view, slab
orientation, obliquity, voxel size or head pose. Rigid only: the head keeps its own size and
the voxels their physical 1.2 mm. Resampling is trilinear, straight from the native grid.
Each slice is then min-max normalised to [0, 1] (the paper's per-slice normalisation), and
the minimum and maximum are kept so that ``from_slices`` can undo every step.

Slices with little foreground (below ``min_foreground`` of the slice area above an Otsu
threshold of the whole grid) are marked invalid: they are not fed to the flow.

Optionally (``brain_extraction``) the brain is extracted first with deepbet (its weights ship in
its wheel), the rigid placement then uses the template's brain, and the mask is kept in the
geometry; a model records the choice, so harmonization applies the same.
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Union

import nibabel as nib
import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from .errors import InputError, ProcessingError, one_line
from .threads import ants_single_threaded

ImageLike = Union[str, os.PathLike, nib.spatialimages.SpatialImage]

_REGISTRATION_MM = 3.0
_REGISTRATION_SEED = 20230510
_FLIP_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (ANTs, ITK)


@dataclass(frozen=True)
class PreprocessingConfig:
    """How native images become slices; stored in every model file."""

    resolution_mm: float = 1.2
    slice_shape: tuple[int, int] = (144, 176)  # (left-right, posterior-anterior) voxels
    n_positions: int = 128  # axial slices, inferior to superior
    grid_centre_mm: tuple[float, float, float] = (0.0, -18.0, 8.0)  # template space
    placement: str = "rigid"  # "rigid" registration to the template, or "centre" of mass
    min_foreground: float = 0.03
    brain_extraction: bool = False  # deepbet before slicing; the model then expects brains

    def __post_init__(self) -> None:
        if self.placement not in ("rigid", "centre"):
            raise ValueError(f"placement must be 'rigid' or 'centre', not {self.placement!r}")
        object.__setattr__(self, "slice_shape", tuple(int(n) for n in self.slice_shape))
        object.__setattr__(self, "grid_centre_mm", tuple(float(c) for c in self.grid_centre_mm))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "PreprocessingConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown preprocessing settings: {', '.join(sorted(unknown))}")
        return cls(**values)

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        return (self.slice_shape[0], self.slice_shape[1], self.n_positions)

    @property
    def grid_affine(self) -> np.ndarray:
        """Grid voxel -> template millimetres (RAS)."""
        affine = np.diag([self.resolution_mm] * 3 + [1.0])
        centre_voxel = (np.asarray(self.grid_shape) - 1) / 2.0
        affine[:3, 3] = np.asarray(self.grid_centre_mm) - self.resolution_mm * centre_voxel
        return affine


@dataclass
class SliceGeometry:
    """Where an image's slices came from, and how to put them back."""

    config: PreprocessingConfig
    native_shape: tuple[int, int, int]
    native_affine: np.ndarray
    template_to_native: np.ndarray  # 4x4, template mm -> native world mm (RAS)
    positions: np.ndarray  # model slice position of each returned slice
    valid: np.ndarray  # False for empty / near-empty slices
    slice_min: np.ndarray
    slice_max: np.ndarray
    native_header: nib.Nifti1Header | None = field(default=None, repr=False)
    brain_mask: np.ndarray | None = field(default=None, repr=False)  # native grid, with extraction

    def placement(self) -> dict[str, Any]:
        """What a paired image reuses: the grid and the rigid placement."""
        return {"config": self.config, "template_to_native": self.template_to_native}


def _config_of(config_or_model: Any) -> PreprocessingConfig:
    if isinstance(config_or_model, PreprocessingConfig):
        return config_or_model
    config = getattr(config_or_model, "preprocessing", None)
    if isinstance(config, PreprocessingConfig):
        return config
    raise TypeError("expected a PreprocessingConfig or a model carrying one")


def load_t1w(image: ImageLike) -> tuple[nib.spatialimages.SpatialImage, np.ndarray, str]:
    """Image, float32 data and a name for messages; refuses what cannot be a T1w volume."""
    name = "<in-memory image>"
    if not isinstance(image, nib.spatialimages.SpatialImage):
        name = str(image)
        if not Path(name).is_file():
            raise InputError(f"{name}: no such file")
        try:
            image = nib.load(name)
        except Exception as error:
            raise InputError(f"{name}: not a readable NIfTI/MGH image ({error})") from None
    elif image.get_filename():
        name = image.get_filename()
    shape = image.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise InputError(f"{name}: expected a 3D T1w volume, got shape {tuple(image.shape)}")
    try:
        data = np.asarray(image.dataobj, dtype=np.float32).reshape(shape)
    except Exception as error:
        raise InputError(f"{name}: image data cannot be read ({error})") from None
    if not np.all(np.isfinite(data)):
        raise InputError(f"{name}: contains NaN or infinite values")
    if min(shape) < 8 or float(data.max()) <= float(data.min()):
        raise InputError(f"{name}: image is empty, constant or too small ({shape})")
    if not np.all(np.isfinite(image.affine)) or abs(np.linalg.det(image.affine[:3, :3])) < 1e-6:
        raise InputError(f"{name}: the affine is not a valid voxel-to-world transform")
    return image, data, name


def _world_aligned(data: np.ndarray, affine: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed, trilinear copy on an axis-aligned RAS grid covering the image (any affine)."""
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in data.shape], indexing="ij")).reshape(3, -1)
    world = affine[:3, :3] @ corners + affine[:3, 3:4]
    lower, upper = world.min(1), world.max(1)
    shape = tuple(int(np.ceil((hi - lo) / spacing)) + 1 for lo, hi in zip(lower, upper))
    target = np.diag([spacing] * 3 + [1.0])
    target[:3, 3] = lower
    voxel_mm = np.sqrt((affine[:3, :3] ** 2).sum(0))
    smooth = ndimage.gaussian_filter(data, np.maximum(spacing / voxel_mm - 1.0, 0.0) * 0.5)
    mapping = np.linalg.inv(affine) @ target
    resampled = ndimage.affine_transform(smooth, mapping[:3, :3], mapping[:3, 3], output_shape=shape, order=1)
    return resampled.astype(np.float32), target


@lru_cache(maxsize=2)
def _template_for_registration(brain: bool):
    """The template at registration resolution: with its head, or its brain only."""
    from .templates import template_file

    image = nib.load(str(template_file("T1w")))
    data = np.asarray(image.dataobj, dtype=np.float32)
    if brain:
        data = data * (np.asarray(nib.load(str(template_file("mask", desc="brain"))).dataobj) > 0.5)
    return _world_aligned(data, image.affine, _REGISTRATION_MM)


@lru_cache(maxsize=1)
def _brain_extractor():
    from deepbet import BrainExtraction

    return BrainExtraction(no_gpu=True)


def extract_brain(image: nib.spatialimages.SpatialImage) -> np.ndarray:
    """Brain mask (native grid, bool) from deepbet, whose weights ship in its wheel; its
    failures (odd grids, too little head) become a :class:`ProcessingError` naming the file."""
    native = nib.Nifti1Image(np.asarray(image.dataobj, dtype=np.float32).reshape(image.shape[:3]), image.affine)
    try:
        _, mask, _ = _brain_extractor().run(native)
    except Exception as error:
        raise ProcessingError(f"{image.get_filename() or '<in-memory image>'}: brain extraction (deepbet) "
                              f"failed ({one_line(error)})") from error
    return np.asarray(mask.dataobj).reshape(image.shape[:3]) > 0


def _to_ants(data: np.ndarray, affine: np.ndarray):
    """An axis-aligned RAS array as an ANTs image (ANTs works in LPS)."""
    import ants

    spacing = tuple(float(s) for s in np.diag(affine)[:3])
    origin = (-float(affine[0, 3]), -float(affine[1, 3]), float(affine[2, 3]))
    direction = np.diag([-1.0, -1.0, 1.0])
    return ants.from_numpy(np.ascontiguousarray(data), origin=origin, spacing=spacing, direction=direction)


def _rigid_template_to_native(data: np.ndarray, affine: np.ndarray, brain: bool = False) -> np.ndarray:
    """Rigid transform (4x4, RAS mm) taking template points to the native image's world."""
    ants_single_threaded()
    import ants

    # Reproducible registration: ANTs seeds its metric sampling from this setting (and runs
    # single-threaded, see bids_harmony/__init__.py). ants.config.set_ants_deterministic does
    # the same but also reseeds numpy's global generator, which is not ours to touch.
    ants.config._random_seed = _REGISTRATION_SEED
    moving = _to_ants(*_world_aligned(data, affine, _REGISTRATION_MM))
    fixed = _to_ants(*_template_for_registration(brain))
    # antspyx leaves its transform file in the shared temporary folder unless told where to write
    with tempfile.TemporaryDirectory(prefix="bids_harmony-ants-") as scratch:
        result = ants.registration(fixed, moving, type_of_transform="Rigid",
                                   outprefix=os.path.join(scratch, "rigid_"))
        transform = ants.read_transform(result["fwdtransforms"][0])
    return _itk_to_ras(transform.parameters, transform.fixed_parameters)


def _itk_to_ras(parameters, centre) -> np.ndarray:
    """An ITK affine (12 parameters and its centre, LPS) as a 4x4 RAS matrix."""
    parameters = np.asarray(parameters, dtype=np.float64)
    matrix, translation = parameters[:9].reshape(3, 3), parameters[9:12]
    centre = np.asarray(centre, dtype=np.float64)
    lps = np.eye(4)
    lps[:3, :3] = matrix
    lps[:3, 3] = translation + centre - matrix @ centre  # ITK: T(p) = A (p - c) + t + c
    return _FLIP_LPS @ lps @ _FLIP_LPS


def _centre_template_to_native(data: np.ndarray, affine: np.ndarray, config: PreprocessingConfig):
    """Translation putting the grid centre on the centre of mass of the head."""
    coarse, coarse_affine = _world_aligned(data, affine, _REGISTRATION_MM)
    foreground = coarse > threshold_otsu(coarse)
    centre_voxel = np.asarray(ndimage.center_of_mass(foreground))
    centre_mm = coarse_affine[:3, :3] @ centre_voxel + coarse_affine[:3, 3]
    transform = np.eye(4)
    transform[:3, 3] = centre_mm - np.asarray(config.grid_centre_mm)
    return transform


def _resample(data: np.ndarray, voxel_map: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Trilinear resampling where ``voxel_map`` takes output voxels to input voxels."""
    return ndimage.affine_transform(
        data, voxel_map[:3, :3], voxel_map[:3, 3], output_shape=shape, order=1, mode="constant", cval=0.0
    ).astype(np.float32)


def _native_to_grid(data: np.ndarray, affine: np.ndarray, template_to_native: np.ndarray,
                    config: PreprocessingConfig) -> np.ndarray:
    voxel_map = np.linalg.inv(affine) @ template_to_native @ config.grid_affine
    return _resample(data, voxel_map, config.grid_shape)


def mask_to_slices(mask: np.ndarray, affine: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """A binary mask of the same head (e.g. the brain) on ``geometry``'s slices: (n, H, W) bool.

    Resampled like the image, then thresholded at one half.
    """
    grid = _native_to_grid(np.asarray(mask, dtype=np.float32), affine, geometry.template_to_native,
                           geometry.config)
    return np.moveaxis(grid, 2, 0) > 0.5


def minmax_slices(slices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-slice min-max to [0, 1] of (n, H, W) slices, with each slice's minimum and maximum.

    A constant slice maps to 0 (its span is taken as 1).
    """
    slices = np.asarray(slices)
    lows = slices.reshape(slices.shape[0], -1).min(1)
    highs = slices.reshape(slices.shape[0], -1).max(1)
    spans = np.where(highs > lows, highs - lows, 1.0)
    normalised = (slices - lows[:, None, None]) / spans[:, None, None]
    return normalised.astype(np.float32), lows, highs


def to_slices(
    image: ImageLike, config: Any, geometry: SliceGeometry | None = None
) -> tuple[np.ndarray, SliceGeometry]:
    """Axial slices ``(n_positions, H, W)`` in [0, 1] and the geometry to invert them.

    ``config`` is a ``PreprocessingConfig`` or a model that carries one. A ``geometry`` from
    another image reuses its placement, so a paired image on the same head is sliced on
    exactly the same grid (its own intensities are normalised anew).
    """
    image, data, name = load_t1w(image)
    config = geometry.config if geometry is not None else _config_of(config)
    brain_mask = None
    if config.brain_extraction:
        brain_mask = extract_brain(image)
        data = data * brain_mask
    if geometry is not None:
        template_to_native = geometry.template_to_native
    elif config.placement == "rigid":
        try:
            template_to_native = _rigid_template_to_native(data, image.affine, config.brain_extraction)
        except Exception as error:  # ANTs raises RuntimeError with ITK's multi-line report
            raise ProcessingError(f"{name}: the rigid registration to the template (ANTs) failed "
                                  f"({one_line(error)})") from error
    else:
        template_to_native = _centre_template_to_native(data, image.affine, config)
    grid = _native_to_grid(data, image.affine, template_to_native, config)
    normalised, lows, highs = minmax_slices(np.moveaxis(grid, 2, 0))  # (positions, H, W)
    foreground = grid > threshold_otsu(grid) if grid.max() > grid.min() else np.zeros_like(grid, bool)
    coverage = foreground.reshape(-1, grid.shape[2]).mean(0)
    valid = (coverage >= config.min_foreground) & (highs > lows)
    header = image.header.copy() if isinstance(image.header, nib.Nifti1Header) else None
    return normalised, SliceGeometry(
        config=config,
        native_shape=tuple(int(n) for n in data.shape),
        native_affine=image.affine.copy(),
        template_to_native=template_to_native,
        positions=np.arange(config.n_positions),
        valid=valid,
        slice_min=lows.astype(np.float64),
        slice_max=highs.astype(np.float64),
        native_header=header,
        brain_mask=brain_mask,
    )


def grid_volume(slices: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """Slices back on the grid ``(H, W, n_positions)`` with their native intensities."""
    slices = np.asarray(slices, dtype=np.float64)
    expected = (len(geometry.positions),) + tuple(geometry.config.slice_shape)
    if slices.shape != expected:
        raise ValueError(f"slices have shape {slices.shape}, the geometry expects {expected}")
    spans = (geometry.slice_max - geometry.slice_min)[:, None, None]
    restored = slices * spans + geometry.slice_min[:, None, None]
    volume = np.zeros(geometry.config.grid_shape, dtype=np.float32)
    volume[:, :, geometry.positions] = np.moveaxis(restored, 0, 2)
    return volume


def from_slices(slices: np.ndarray, geometry: SliceGeometry) -> nib.Nifti1Image:
    """A native-grid image from (possibly harmonized) slices; outside the grid is zero."""
    volume = grid_volume(slices, geometry)
    config = geometry.config
    voxel_map = np.linalg.inv(config.grid_affine) @ np.linalg.inv(geometry.template_to_native) @ geometry.native_affine
    native = _resample(volume, voxel_map, geometry.native_shape)
    header = geometry.native_header.copy() if geometry.native_header is not None else None
    output = nib.Nifti1Image(native, geometry.native_affine, header)
    output.set_data_dtype(np.float32)
    output.header.set_slope_inter(1.0, 0.0)
    return output


ITK_TRANSFORM_HEADER = "#Insight Transform File V1.0"


def write_itk_transform(template_to_native: np.ndarray, path: str | Path) -> None:
    """The rigid placement as an ITK text transform "from the T1w to the grid".

    As ANTs and nitransforms read it (LPS millimetres; the transform maps points of the grid's
    space to the T1w's), ``antsApplyTransforms -i T1w -r <grid image> -t <file>`` resamples the
    T1w onto the 1.2 mm grid.
    """
    lps = _FLIP_LPS @ np.asarray(template_to_native, dtype=np.float64) @ _FLIP_LPS
    parameters = " ".join(repr(float(value)) for value in [*lps[:3, :3].ravel(), *lps[:3, 3]])
    Path(path).write_text(f"{ITK_TRANSFORM_HEADER}\n#Transform 0\nTransform: AffineTransform_double_3_3\n"
                          f"Parameters: {parameters}\nFixedParameters: 0 0 0\n")


def read_itk_transform(path: str | Path) -> np.ndarray:
    """The 4x4 template-to-native (RAS) matrix of a file written by :func:`write_itk_transform`
    (or any single ITK affine text transform)."""
    path = Path(path)
    fields = {}
    for line in path.read_text().splitlines():
        key, separator, value = line.partition(":")
        if separator:
            fields[key.strip()] = value.split()
    try:
        return _itk_to_ras(np.asarray(fields["Parameters"], dtype=np.float64)[:12],
                           np.asarray(fields.get("FixedParameters", ["0", "0", "0"]), dtype=np.float64))
    except (KeyError, ValueError) as error:
        raise InputError(f"{path}: not an ITK affine text transform ({error})") from None


def save_geometry(geometry: SliceGeometry, path: str | Path, transform_path: str | Path) -> None:
    """The geometry as a JSON file plus the placement as an ITK transform beside it, so that a
    later step (another process, a later run) can put slices back without the image in memory."""
    path, transform_path = Path(path), Path(transform_path)
    write_itk_transform(geometry.template_to_native, transform_path)
    content = {
        "config": geometry.config.to_dict(),
        "native_shape": list(geometry.native_shape),
        "native_affine": np.asarray(geometry.native_affine, dtype=np.float64).tolist(),
        "transform": transform_path.name if transform_path.parent == path.parent else str(transform_path),
        "positions": np.asarray(geometry.positions).tolist(),
        "valid": np.asarray(geometry.valid, dtype=bool).tolist(),
        "slice_min": np.asarray(geometry.slice_min, dtype=np.float64).tolist(),
        "slice_max": np.asarray(geometry.slice_max, dtype=np.float64).tolist(),
    }
    path.write_text(json.dumps(content) + "\n")


def load_geometry(path: str | Path, native_image: ImageLike | None = None) -> SliceGeometry:
    """A geometry saved by :func:`save_geometry`; ``native_image`` (the T1w it came from) gives
    the header that :func:`from_slices` copies."""
    path = Path(path)
    try:
        content = json.loads(path.read_text())
        config = PreprocessingConfig.from_dict(content["config"])
        transform = read_itk_transform(path.parent / content["transform"])
        header = None
        if native_image is not None:
            native = native_image if isinstance(native_image, nib.spatialimages.SpatialImage) else nib.load(str(native_image))
            header = native.header.copy() if isinstance(native.header, nib.Nifti1Header) else None
        return SliceGeometry(
            config=config,
            native_shape=tuple(int(n) for n in content["native_shape"]),
            native_affine=np.asarray(content["native_affine"], dtype=np.float64),
            template_to_native=transform,
            positions=np.asarray(content["positions"], dtype=np.int64),
            valid=np.asarray(content["valid"], dtype=bool),
            slice_min=np.asarray(content["slice_min"], dtype=np.float64),
            slice_max=np.asarray(content["slice_max"], dtype=np.float64),
            native_header=header,
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"{path}: not a readable slice geometry file ({error})") from None


def grid_image(slices: np.ndarray, geometry: SliceGeometry) -> nib.Nifti1Image:
    """Slices on the 1.2 mm grid as an image in the grid's own space (template millimetres):
    the reference that the saved transform resamples the T1w onto."""
    image = nib.Nifti1Image(grid_volume(slices, geometry), geometry.config.grid_affine)
    image.set_data_dtype(np.float32)
    image.header.set_xyzt_units("mm")
    return image
