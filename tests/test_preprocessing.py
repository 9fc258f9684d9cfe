"""Native T1w <-> slice grid: placement, normalisation, inversion, refusal of bad input."""
import gzip
import tempfile

import nibabel as nib
import numpy as np
import pytest
from nibabel.processing import resample_from_to
from scipy import ndimage

from bids_harmony.errors import InputError
from bids_harmony.preprocessing import PreprocessingConfig, from_slices, to_slices

CONFIG = PreprocessingConfig()


@pytest.fixture(scope="module")
def source_scan(multiscanner_dataset):
    """A Domain 2 scan (1.25 mm partitions, oblique slab) and its paired target scan."""
    subject = "sub-03"
    anat = multiscanner_dataset / "derivatives" / "groundtruth" / subject / "anat"
    return (multiscanner_dataset / subject / "anat" / f"{subject}_T1w.nii.gz",
            anat / f"{subject}_desc-pairedtarget_T1w.nii.gz")


def test_slices_are_normalised_and_marked(source_scan):
    slices, geometry = to_slices(source_scan[0], CONFIG)
    assert slices.shape == (CONFIG.n_positions,) + CONFIG.slice_shape and slices.dtype == np.float32
    assert slices.min() >= 0.0 and slices.max() <= 1.0
    valid = geometry.valid
    assert np.allclose(slices[valid].reshape(valid.sum(), -1).max(1), 1.0)
    assert np.allclose(slices[valid].reshape(valid.sum(), -1).min(1), 0.0)
    assert np.array_equal(geometry.positions, np.arange(CONFIG.n_positions))
    assert valid[20:110].all()


def test_round_trip_loses_no_more_than_interpolation(source_scan):
    image = nib.load(str(source_scan[0]))
    slices, geometry = to_slices(image, CONFIG)
    restored = from_slices(slices, geometry)
    assert restored.shape == image.shape and np.allclose(restored.affine, image.affine)
    # the same two resamplings done independently, by nibabel, bound what interpolation costs
    grid = nib.Nifti1Image(np.zeros(CONFIG.grid_shape, np.float32),
                           geometry.template_to_native @ CONFIG.grid_affine)
    reference = resample_from_to(resample_from_to(image, grid, order=1), image, order=1).get_fdata()
    original, ours = image.get_fdata(), restored.get_fdata()
    inside = reference > 0
    our_error = np.abs(ours - original)[inside].mean()
    interpolation_error = np.abs(reference - original)[inside].mean()
    assert our_error <= 1.02 * interpolation_error
    assert np.corrcoef(ours[inside], original[inside])[0, 1] > 0.99


def test_smooth_image_round_trips_almost_exactly():
    affine = np.diag([1.1, 0.9, 1.3, 1.0])
    affine[:3, 3] = [-90, -110, -80]
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in (160, 220, 150)], indexing="ij")
    data = (1.0 + np.cos(2.0 * x) * np.cos(1.5 * y) * np.cos(z) + 0.3 * z).astype(np.float32)
    image = nib.Nifti1Image(data, affine)
    slices, geometry = to_slices(image, PreprocessingConfig(placement="centre"))
    restored = from_slices(slices, geometry).get_fdata()
    inside = ndimage.binary_erosion(restored > 0, iterations=2)  # away from the grid's border
    assert inside.mean() > 0.5
    assert np.abs(restored - data)[inside].max() < 0.01 * np.ptp(data)


def test_paired_image_reuses_the_placement(source_scan):
    source_slices, geometry = to_slices(source_scan[0], CONFIG)
    paired_slices, paired_geometry = to_slices(source_scan[1], CONFIG, geometry=geometry)
    assert np.array_equal(paired_geometry.template_to_native, geometry.template_to_native)
    assert paired_geometry.native_shape != geometry.native_shape  # its own native grid
    # same head, same grid: slices agree position by position (contrast differs, anatomy not)
    middle = range(40, 100)
    correlation = [np.corrcoef(source_slices[k].ravel(), paired_slices[k].ravel())[0, 1] for k in middle]
    shifted = [np.corrcoef(source_slices[k].ravel(), paired_slices[k + 8].ravel())[0, 1] for k in middle]
    assert min(correlation) > 0.85 and np.mean(correlation) > np.mean(shifted) + 0.05


def test_rigid_placement_is_reproducible(source_scan):
    _, first = to_slices(source_scan[0], CONFIG)
    _, second = to_slices(source_scan[0], CONFIG)
    assert np.array_equal(first.template_to_native, second.template_to_native)


def test_placement_leaves_no_temporary_files(source_scan, tmp_path, monkeypatch):
    """antspyx writes every registration's transform to the temporary folder and keeps it."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    to_slices(source_scan[0], CONFIG)
    assert list(tmp_path.iterdir()) == []


def _write_bytes(path, content):
    path.write_bytes(content)
    return path


def _write(path, data, affine=np.eye(4)):
    nib.Nifti1Image(data, affine).to_filename(str(path))
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.nii.gz", "no such file"),
        (lambda d: _write(d / "four_d.nii.gz", np.random.rand(20, 20, 20, 3).astype(np.float32)),
         "expected a 3D T1w volume"),
        (lambda d: _write(d / "nan.nii.gz", np.full((20, 20, 20), np.nan, np.float32)), "NaN or infinite"),
        (lambda d: _write(d / "flat.nii.gz", np.ones((20, 20, 20), np.float32)), "empty, constant"),
        (lambda d: _write_bytes(d / "corrupt.nii.gz", gzip.compress(b"not a nifti")), "not a readable"),
    ],
)
def test_bad_input_is_refused_naming_the_file(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(InputError, match=message) as error:
        to_slices(path, CONFIG)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_optional_brain_extraction_keeps_the_mask(source_scan, multiscanner_dataset):
    config = PreprocessingConfig(brain_extraction=True)
    slices, geometry = to_slices(source_scan[0], config)
    truth = np.asarray(nib.load(str(multiscanner_dataset / "derivatives" / "groundtruth" / "sub-03" / "anat"
                                    / "sub-03_dseg.nii.gz")).dataobj)
    brain = (truth >= 1) & (truth <= 3)
    mask = geometry.brain_mask
    assert mask.shape == brain.shape
    assert 2 * np.sum(mask & brain) / (mask.sum() + brain.sum()) > 0.8
    _, with_head = to_slices(source_scan[0], CONFIG)
    assert geometry.valid.sum() < with_head.valid.sum()  # no scalp above the vertex, no face
    # outside the brain (beyond the reach of the two trilinear resamplings) the slices are empty
    restored = from_slices(slices, geometry).get_fdata()
    assert np.abs(restored[~ndimage.binary_dilation(mask, iterations=3)]).max() < 1e-3 * restored.max()
