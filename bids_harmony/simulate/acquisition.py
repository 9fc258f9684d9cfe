"""Random subjects made from real anatomies, and their MPRAGE acquisition on a scanner.

A subject is an anatomy seen through a random smooth diffeomorphism (a stationary velocity
field integrated by scaling and squaring), a random per-axis head size, a random T1 scale
(age and myelination), and a random rigid pose in the scanner. An acquisition samples the
subject's tissue fractions at the centres of the scanner's voxels (a sagittal slab, possibly
oblique), turns them into MPRAGE signal with the local flip angle (B1+), multiplies by the
receive field (B1-), blurs to the voxel size, adds Rician noise at the scanner's SNR and
stores int16 with a scale factor, as a scanner's NIfTI conversion would.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage
from scipy.spatial.transform import Rotation

from .anatomy import Anatomy, fractions_to_labels
from .mprage import mprage_signal
from .scanners import Scanner, receive_field, transmit_field
from .tissues import TISSUE_INDEX, TISSUES

#: Head-space box (mm, around the anterior commissure) carrying the deformation field.
_FIELD_BOX = np.array([[-110.0, 110.0], [-150.0, 115.0], [-110.0, 125.0]])
_FIELD_SPACING_MM = 5.0
_SQUARINGS = 6
_CHUNK_VOXELS = 1 << 20
_HEAD_CENTRE_MM = np.array([0.0, -15.0, 15.0])  # where the operator centres the slab


@dataclass(frozen=True)
class VariabilitySettings:
    """How much subjects differ: deformation, head size, T1 and pose (1 sd each)."""

    deformation_rms_mm: float = 4.0
    deformation_smoothness_mm: float = 15.0
    head_size_sd: float = 0.05
    t1_scale_sd: float = 0.03
    pitch_sd_deg: float = 5.0
    roll_yaw_sd_deg: float = 2.5
    translation_sd_mm: float = 5.0
    slab_tilt_sd_deg: float = 3.0
    calibration_sd: float = 0.01


@dataclass
class Subject:
    """One simulated person: an anatomy, how it is deformed, and how it lies in the scanner."""

    anatomy: Anatomy
    displacement: np.ndarray  # (3, gx, gy, gz) mm, on the head-space field grid
    head_scale: np.ndarray  # (3,)
    t1_scale: float
    rotation: np.ndarray  # head space -> scanner space
    translation: np.ndarray  # mm
    slab_rotation: np.ndarray
    slab_centre: np.ndarray  # scanner space, mm
    record: dict = field(default_factory=dict)


def _field_grid_shape() -> tuple[int, int, int]:
    extent = _FIELD_BOX[:, 1] - _FIELD_BOX[:, 0]
    return tuple(int(n) for n in np.round(extent / _FIELD_SPACING_MM).astype(int) + 1)


def _random_displacement(rng: np.random.Generator, settings: VariabilitySettings) -> np.ndarray:
    """A smooth invertible displacement field: exp of a random stationary velocity field."""
    shape = _field_grid_shape()
    sigma = settings.deformation_smoothness_mm / _FIELD_SPACING_MM
    velocity = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), sigma) for _ in range(3)])
    rms = np.sqrt(np.mean(np.sum(velocity**2, axis=0)))
    velocity *= settings.deformation_rms_mm / max(rms, 1e-12) / _FIELD_SPACING_MM  # in voxels
    displacement = velocity / 2**_SQUARINGS
    grid = np.indices(shape, dtype=np.float64)
    for _ in range(_SQUARINGS):  # u <- u + u o (id + u)
        warped = [
            ndimage.map_coordinates(component, grid + displacement, order=1, mode="nearest")
            for component in displacement
        ]
        displacement = displacement + np.stack(warped)
    return (displacement * _FIELD_SPACING_MM).astype(np.float32)


def random_subject(
    anatomy: Anatomy, rng: np.random.Generator, settings: VariabilitySettings | None = None
) -> Subject:
    settings = settings or VariabilitySettings()
    displacement = _random_displacement(rng, settings)
    head_scale = np.clip(1.0 + settings.head_size_sd * rng.standard_normal(3), 0.85, 1.15)
    t1_scale = float(np.clip(1.0 + settings.t1_scale_sd * rng.standard_normal(), 0.9, 1.1))
    angles = np.array(
        [settings.pitch_sd_deg, settings.roll_yaw_sd_deg, settings.roll_yaw_sd_deg]
    ) * np.clip(rng.standard_normal(3), -2.5, 2.5)
    rotation = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    translation = settings.translation_sd_mm * np.clip(rng.standard_normal(3), -2.5, 2.5)
    slab_tilt = settings.slab_tilt_sd_deg * float(np.clip(rng.standard_normal(), -2.5, 2.5))
    slab_rotation = Rotation.from_euler("x", slab_tilt, degrees=True).as_matrix()
    slab_centre = rotation @ _HEAD_CENTRE_MM + translation + 3.0 * rng.standard_normal(3)
    record = {
        "Anatomy": anatomy.name,
        "DeformationRMSmm": float(np.sqrt(np.mean(np.sum(displacement**2, axis=0)))),
        "HeadScale": [round(float(s), 4) for s in head_scale],
        "T1Scale": round(t1_scale, 4),
        "PoseRotationXYZdeg": [round(float(a), 3) for a in angles],
        "PoseTranslationmm": [round(float(t), 3) for t in translation],
        "SlabTiltdeg": round(slab_tilt, 3),
    }
    return Subject(
        anatomy, displacement, head_scale, t1_scale, rotation, translation, slab_rotation,
        slab_centre, record,
    )


def slab_affine(scanner: Scanner, subject: Subject) -> np.ndarray:
    """Voxel -> scanner (RAS mm) affine of a sagittal slab: axes towards L, P and S."""
    directions = np.diag([-1.0, -1.0, 1.0]) * np.asarray(scanner.voxel_size)
    linear = subject.slab_rotation @ directions
    centre_voxel = (np.asarray(scanner.matrix) - 1) / 2.0
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = subject.slab_centre - linear @ centre_voxel
    return affine


def _sample(volume: torch.Tensor, voxel_coords: np.ndarray) -> np.ndarray:
    """Trilinear samples ``(C, N)`` of a ``(C, X, Y, Z)`` volume at voxel coordinates ``(N, 3)``."""
    size = np.asarray(volume.shape[1:], dtype=np.float64)
    normalised = 2.0 * voxel_coords / (size - 1.0) - 1.0
    grid = torch.from_numpy(normalised[:, ::-1].astype(np.float32).copy()).view(1, 1, 1, -1, 3)
    sampled = torch.nn.functional.grid_sample(
        volume[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return sampled.view(volume.shape[0], -1).numpy()


def _signal_tables(scanner: Scanner, t1_scale: float, flip_scales: np.ndarray) -> np.ndarray:
    """MPRAGE signal of every tissue over a range of B1+ scales: ``(n_tissues, n_scales)``."""
    b0 = scanner.field_strength
    rows = []
    for tissue in TISSUES:
        t1 = tissue.t1_at(b0) / 1000.0
        if tissue.name in ("GM", "WM"):
            t1 *= t1_scale
        rows.append(
            mprage_signal(t1, tissue.t2star_at(b0) / 1000.0, tissue.proton_density,
                          scanner.protocol, flip_scales)
        )
    return np.stack(rows)


@dataclass
class Acquisition:
    image: nib.Nifti1Image  # int16 with scl_slope, the scanner's NIfTI
    labels: nib.Nifti1Image  # uint8 dseg on the same grid
    record: dict


def _occupied(subject: Subject, block: int = 4) -> np.ndarray:
    """Coarse map of anatomy voxels that may hold tissue once the subject is deformed."""
    total = subject.anatomy.fractions.sum(0) > 0.0
    padded = [-(-n // block) * block for n in total.shape]
    grid = np.zeros(padded, dtype=bool)
    grid[: total.shape[0], : total.shape[1], : total.shape[2]] = total
    coarse = grid.reshape(padded[0] // block, block, padded[1] // block, block, padded[2] // block, block)
    coarse = coarse.any(axis=(1, 3, 5))
    # a voxel can take tissue from as far as the largest displacement component (in anatomy
    # voxels), plus one voxel of trilinear support
    voxel_mm = np.sqrt((subject.anatomy.affine[:3, :3] ** 2).sum(0)).min()
    reach = float(np.abs(subject.displacement).max()) / (voxel_mm * subject.head_scale.min()) + 1.0
    margin = int(np.ceil(reach / block))
    return ndimage.binary_dilation(coarse, structure=np.ones((3, 3, 3), bool), iterations=margin)


def _affine_components(matrix: np.ndarray, start: int, stop: int, shape) -> list[np.ndarray]:
    """The three output coordinates of an affine map over a block of voxel indices.

    Voxel indices form a regular grid, so each coordinate is a sum of broadcast 1-D terms:
    no (N, 3) index array, no matrix product.
    """
    axes = (
        np.arange(start, stop, dtype=np.float32)[:, None, None],
        np.arange(shape[1], dtype=np.float32)[None, :, None],
        np.arange(shape[2], dtype=np.float32)[None, None, :],
    )
    matrix = matrix.astype(np.float32)
    return [
        matrix[row, 0] * axes[0] + matrix[row, 1] * axes[1] + (matrix[row, 2] * axes[2] + matrix[row, 3])
        for row in range(3)
    ]


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:3, :3].T.astype(np.float32) + matrix[:3, 3].astype(np.float32)


def _tissue_fractions(subject: Subject, head_from_voxel: np.ndarray, start: int, stop: int, shape,
                      occupied: np.ndarray, block: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxels of partitions ``start:stop`` that hold tissue: flat indices, voxel coordinates
    ``(N, 3)`` and tissue fractions ``(n_tissues, N)`` of the deformed, posed subject."""
    anatomy = subject.anatomy
    to_voxel = np.linalg.inv(anatomy.affine)
    anatomy_from_head = np.eye(4)
    anatomy_from_head[:3, :3] = to_voxel[:3, :3] / subject.head_scale
    anatomy_from_head[:3, 3] = to_voxel[:3, 3]
    # cheap pre-selection: only voxels whose undeformed position is near the head are sampled
    coarse = np.diag([1.0 / block] * 3 + [1.0]) @ anatomy_from_head @ head_from_voxel
    blocks = [np.floor(component).astype(np.int32).ravel() for component in _affine_components(coarse, start, stop, shape)]
    within = np.ones(blocks[0].shape, dtype=bool)
    for component, size in zip(blocks, occupied.shape):
        within &= (component >= 0) & (component < size)
    candidates = np.flatnonzero(within)
    candidates = candidates[occupied[blocks[0][candidates], blocks[1][candidates], blocks[2][candidates]]]
    chunk_shape = (stop - start,) + tuple(shape[1:])
    voxels = np.stack(np.unravel_index(candidates, chunk_shape), axis=1).astype(np.float32)
    voxels[:, 0] += start
    head_mm = _apply(head_from_voxel, voxels)
    field_voxel = (head_mm - _FIELD_BOX[:, 0].astype(np.float32)) / _FIELD_SPACING_MM
    head_mm += _sample(torch.from_numpy(subject.displacement), field_voxel).T
    fractions = _sample(torch.from_numpy(anatomy.fractions), _apply(anatomy_from_head, head_mm))
    tissue = fractions.sum(0) > 0
    return candidates[tissue], voxels[tissue], fractions[:, tissue]


def acquire(subject: Subject, scanner: Scanner, rng: np.random.Generator) -> Acquisition:
    """Image ``subject`` with ``scanner``: signal, bias, resolution, Rician noise, int16."""
    affine = slab_affine(scanner, subject)
    shape = scanner.matrix
    site = scanner.site
    calibration = 1.0 + VariabilitySettings().calibration_sd * float(np.clip(rng.standard_normal(), -3, 3))
    flip_grid = np.linspace(0.2, 1.8, 321)
    tables = _signal_tables(scanner, subject.t1_scale, flip_grid)
    occupied = _occupied(subject)
    head_from_scanner = np.eye(4)  # head = R^T (x - t)
    head_from_scanner[:3, :3] = subject.rotation.T
    head_from_scanner[:3, 3] = -subject.rotation.T @ subject.translation
    head_from_voxel = head_from_scanner @ affine

    signal = np.zeros(int(np.prod(shape)), dtype=np.float32)
    labels = np.zeros(int(np.prod(shape)), dtype=np.uint8)
    wm_purity = np.zeros(int(np.prod(shape)), dtype=np.float32)
    partitions_per_chunk = max(1, _CHUNK_VOXELS // (shape[1] * shape[2]))
    for start in range(0, shape[0], partitions_per_chunk):
        stop = min(start + partitions_per_chunk, shape[0])
        flat, voxels, fractions = _tissue_fractions(subject, head_from_voxel, start, stop, shape, occupied)
        flat = flat + start * shape[1] * shape[2]
        scanner_mm = _apply(affine, voxels)
        flip = calibration * transmit_field(site, scanner_mm)
        per_tissue = np.stack([np.interp(flip, flip_grid, row) for row in tables])
        signal[flat] = (fractions * per_tissue).sum(0) * receive_field(site, scanner_mm)
        labels[flat] = fractions_to_labels(fractions)
        wm_purity[flat] = fractions[TISSUE_INDEX["WM"]]
    signal, labels, wm_purity = (array.reshape(shape) for array in (signal, labels, wm_purity))

    clean = signal * site.receiver_gain
    # the sampled fractions carry the anatomy's 1 mm resolution; coarser voxels blur more
    extra_fwhm = np.sqrt(np.maximum(np.asarray(scanner.voxel_size) ** 2 - 1.0, 0.0))
    clean = ndimage.gaussian_filter(clean, extra_fwhm / 2.355 / np.asarray(scanner.voxel_size))
    white_matter = wm_purity > 0.9
    sigma = float(clean[white_matter].mean()) / site.snr
    noisy = np.hypot(clean + sigma * rng.standard_normal(shape, dtype=np.float32),
                     sigma * rng.standard_normal(shape, dtype=np.float32))

    image = nib.Nifti1Image(noisy.astype(np.float32), affine)
    image.header.set_data_dtype(np.int16)
    image.header.set_xyzt_units("mm")
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    label_image = nib.Nifti1Image(labels, affine)
    label_image.header.set_xyzt_units("mm")
    label_image.header.set_qform(affine, code=1)
    label_image.header.set_sform(affine, code=1)
    record = dict(subject.record)
    record.update(scanner.simulation_record())
    record.update({"NoiseSigma": sigma, "TransmitCalibrationSession": round(calibration, 5)})
    return Acquisition(image, label_image, record)
