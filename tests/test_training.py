"""Training: selection of the target scanner, slice cache, likelihood training, resume, files."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from bids_harmony.__about__ import RECORDED_PACKAGES
from bids_harmony.bids.selection import open_layout, select_t1w
from bids_harmony.errors import BidsError, InputError, ModelError
from bids_harmony.model import FlowConfig, build_flow, load_model, save_model
from bids_harmony.model.file import HarmonyModel
from bids_harmony.preprocessing import PreprocessingConfig
from bids_harmony.slice_cache import SliceStore, build_cache
from bids_harmony.training import (
    BEST,
    TrainingSettings,
    best_validation,
    evaluate_bits_per_dim,
    gaussian_baseline_bits_per_dim,
    train_flow,
    validation_rows,
)
from bids_harmony.training_run import (
    PRESET_SCHEDULES,
    QUANTILES,
    assemble_model,
    image_fingerprint,
    preset_settings,
    read_flow_config,
    split_subjects,
    subject_stores,
)

TINY = FlowConfig(levels=2, steps_per_level=1, hidden_channels=8, num_res_blocks=1)
CONFIG = PreprocessingConfig()
SHAPE = (1,) + CONFIG.slice_shape


@pytest.fixture(scope="module")
def target_images(multiscanner_dataset):
    layout = open_layout(multiscanner_dataset)
    return select_t1w(layout, metadata_filters={"StationName": "TRIO-A"})


@pytest.fixture(scope="module")
def entries(target_images, tmp_path_factory):
    """The slice cache's entries of the two target subjects, in their order."""
    cache = tmp_path_factory.mktemp("cache")
    return build_cache([image.path for image in target_images], CONFIG, cache, nprocs=2, progress=False)


@pytest.fixture(scope="module")
def stores(entries):
    """One target subject for training, the other for validation, from the slice cache."""
    return SliceStore(entries[:1], CONFIG.slice_shape), SliceStore(entries[1:], CONFIG.slice_shape)


def test_metadata_filter_picks_the_target_and_not_domain4(multiscanner_dataset, target_images):
    layout = open_layout(multiscanner_dataset)
    same_model = select_t1w(layout, metadata_filters={"ManufacturersModelName": "TrioTim"})
    assert len(same_model) == 4  # the target and Domain 4 share model and protocol
    assert len(target_images) == 2
    assert {image.metadata["StationName"] for image in target_images} == {"TRIO-A"}
    assert len(select_t1w(layout, metadata_filters={"MagneticFieldStrength": "1.5"})) == 2
    assert select_t1w(layout, participant_labels=["sub-01"])[0].subject == "01"
    with pytest.raises(BidsError, match="no participant"):
        select_t1w(layout, participant_labels=["sub-99"])


def test_cache_streams_the_valid_slices(stores, target_images):
    train, validation = stores
    assert len(train) > 100 and len(validation) > 100
    batch = train.read(np.array([5, 0, len(train) - 1]))
    assert batch.shape == (3,) + CONFIG.slice_shape and batch.dtype == np.float32
    assert 0.0 <= batch.min() and batch.max() <= 1.0 and np.allclose(batch.reshape(3, -1).max(1), 1.0, atol=1e-4)
    means, quantiles = train.position_statistics(CONFIG.n_positions, np.linspace(0, 1, 11))
    assert means.shape == (CONFIG.n_positions,) + CONFIG.slice_shape
    assert np.all(np.diff(quantiles[64]) >= 0) and quantiles[64, -1] > 0.9


def _settings(**changes):
    values = dict(steps=12, batch_size=8, validation_every=6, checkpoint_every=6, validation_slices=32, seed=3)
    values.update(changes)
    return TrainingSettings(**values)


def test_short_training_lowers_validation_bits_per_dim(stores, tmp_path):
    train, validation = stores
    torch.manual_seed(0)
    flow = build_flow(TINY, SHAPE)
    rows = validation_rows(validation, 32)
    history = train_flow(flow, train, validation, _settings(steps=40, validation_every=40, learning_rate=2e-3),
                         tmp_path, torch.device("cpu"), progress=False)
    fresh = build_flow(TINY, SHAPE)
    train_flow(fresh, train, validation, _settings(steps=1, learning_rate=0.0), tmp_path / "fresh",
               torch.device("cpu"), progress=False)  # ActNorm-initialised, untrained
    before = evaluate_bits_per_dim(fresh, validation, rows, torch.device("cpu"))
    after = history[-1]["val_bpd"]
    assert np.isfinite(after) and after < before - 0.2, (before, after)
    assert (tmp_path / "training_log.csv").read_text().startswith("step,train_bpd,val_bpd")


def test_keep_best_ends_with_the_best_validations_weights(stores, tmp_path):
    train, validation = stores
    torch.manual_seed(0)
    flow = build_flow(TINY, SHAPE)
    settings = _settings(steps=12, validation_every=3, learning_rate=1.0, keep_best=True)  # far too high
    history = train_flow(flow, train, validation, settings, tmp_path, torch.device("cpu"), progress=False)
    best = best_validation(history)
    assert best["step"] < history[-1]["step"], history  # it overshoots after its first validation
    rows = validation_rows(validation, settings.validation_slices)
    assert evaluate_bits_per_dim(flow, validation, rows, torch.device("cpu")) == pytest.approx(best["val_bpd"], abs=1e-4)
    kept = torch.load(tmp_path / BEST, weights_only=True)
    assert kept["step"] == best["step"]
    for name, value in flow.state_dict().items():
        assert torch.equal(value, kept["flow"][name]), name


def test_resume_continues_the_same_trajectory(stores, tmp_path):
    train, validation = stores
    flows = []
    for _ in range(2):
        torch.manual_seed(0)
        flows.append(build_flow(TINY, SHAPE))
    straight, interrupted = flows
    train_flow(straight, train, validation, _settings(), tmp_path / "straight", torch.device("cpu"), progress=False)
    train_flow(interrupted, train, validation, _settings(), tmp_path / "resumed", torch.device("cpu"),
               progress=False, stop_after=5)
    torch.manual_seed(1)
    resumed = build_flow(TINY, SHAPE)  # other initial weights: the checkpoint must replace them
    train_flow(resumed, train, validation, _settings(), tmp_path / "resumed", torch.device("cpu"),
               resume=True, progress=False)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def _model(flow, config=TINY):
    means = np.random.default_rng(0).random((CONFIG.n_positions,) + CONFIG.slice_shape).astype(np.float32)
    return HarmonyModel(flow, config, SHAPE, CONFIG, means, np.zeros((CONFIG.n_positions, 11), np.float32),
                        {"scanners": []}, {"steps": 1})


def test_model_file_round_trip_and_refusals(tmp_path):
    flow = build_flow(TINY, SHAPE).eval()
    path = tmp_path / "model.pt"
    save_model(_model(flow), path)
    loaded = load_model(path)
    images = torch.rand(2, *SHAPE) - 0.5
    with torch.no_grad():
        assert torch.allclose(flow.log_prob(images), loaded.flow.log_prob(images))
    assert loaded.preprocessing == CONFIG and loaded.flow_config == TINY
    assert np.allclose(loaded.mean_slices, _model(flow).mean_slices, atol=1e-3)  # float16 storage

    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(64)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(bytes(data))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: len(data) // 3])
    other = FlowConfig(levels=2, steps_per_level=2, hidden_channels=8, num_res_blocks=1)
    mismatched = tmp_path / "mismatched.pt"
    bad = _model(flow)
    bad.flow_config = other  # weights of one architecture labelled as another
    save_model(bad, mismatched)
    for broken, message in ((tmp_path / "missing.pt", "no such model file"), (corrupt, "corrupt|not a readable"),
                            (truncated, "not a readable"), (mismatched, "does not match")):
        with pytest.raises(ModelError, match=message) as error:
            load_model(broken)
        assert str(broken) in str(error.value) and "\n" not in str(error.value)


def test_model_file_keeps_per_level_settings(tmp_path):
    per_level = FlowConfig(levels=2, steps_per_level=(1, 2), hidden_channels=(4, 8), num_res_blocks=1)
    flow = build_flow(per_level, SHAPE).eval()
    save_model(_model(flow, per_level), tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.flow_config == per_level and loaded.flow_config.hidden_channels == (4, 8)
    images = torch.rand(2, *SHAPE) - 0.5
    with torch.no_grad():
        assert torch.allclose(flow.log_prob(images), loaded.flow.log_prob(images))


def _train_command(dataset, model, work, *extra, target="StationName=TRIO-A"):
    return [sys.executable, "-m", "bids_harmony.cli.train", str(dataset), str(model), "--target",
            target, "--preset", "small", "--steps", "3", "--batch-size", "8",
            "--validation-every", "3", "--checkpoint-every", "3", "--device", "cpu", "-w", str(work), *extra]


def test_flow_config_file_replaces_preset_fields(tmp_path):
    from bids_harmony.model import PRESETS

    assert read_flow_config("small", None) == PRESETS["small"]
    good = tmp_path / "coarse.json"
    good.write_text('{"steps_per_level": [2, 3, 4, 4], "hidden_channels": 16}')
    config = read_flow_config("small", good)
    assert config.steps_per_level == (2, 3, 4, 4) and config.hidden_channels == 16
    assert config.num_res_blocks == PRESETS["small"].num_res_blocks
    for text, message in (('{"steps_per_level": [2, 3]}', "one per level"), ('{"depth": 3}', "unknown"),
                          ("[1, 2]", "JSON object"), ("{not json", "not a readable JSON")):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(InputError, match=message) as error:
            read_flow_config("small", bad)
        assert str(bad) in str(error.value) and "\n" not in str(error.value)


def test_split_subjects_holds_out_whole_subjects():
    subjects = [f"{index:02d}" for index in range(10)]
    train, validation = split_subjects(subjects + subjects[:3], 0.2, seed=4)  # one label per subject
    assert len(validation) == 2 and sorted(train + validation) == subjects and not set(train) & set(validation)
    assert train == sorted(train) and validation == sorted(validation)
    assert split_subjects(reversed(subjects), 0.2, seed=4) == (train, validation)  # input order is irrelevant
    assert split_subjects(subjects, 0.2, seed=5) != (train, validation)
    assert len(split_subjects(subjects, 0.01, seed=0)[1]) == 1  # at least one held out
    with pytest.raises(InputError, match="only 1 subject selected: training needs at least 2"):
        split_subjects(["01", "01"], 0.5, seed=0)
    for fraction in (0.0, 1.0, float("nan")):
        with pytest.raises(InputError, match="validation fraction must be between 0 and 1") as error:
            split_subjects(subjects, fraction, seed=0)
        assert "--" not in str(error.value)


def test_preset_settings_take_the_presets_schedule():
    assert (preset_settings("small").steps, preset_settings("small").batch_size) == PRESET_SCHEDULES["small"]
    settings = preset_settings("paper", steps=7, learning_rate=1e-3, seed=2)
    assert (settings.steps, settings.batch_size) == (7, PRESET_SCHEDULES["paper"][1])
    assert settings.learning_rate == 1e-3 and settings.seed == 2


def test_image_fingerprint_follows_names_sizes_and_times(tmp_path):
    first, second = tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"
    first.write_bytes(b"1234")
    second.write_bytes(b"5678")
    digest = image_fingerprint([first, second])
    assert digest == image_fingerprint([first, second]) and len(digest) == 64
    assert digest != image_fingerprint([second, first])
    os.utime(second, ns=(0, second.stat().st_mtime_ns + 1_000_000))
    assert digest != image_fingerprint([first, second])


def test_subject_stores_keep_each_subject_on_one_side(target_images, entries, stores):
    split = {"train": [target_images[0].subject], "validation": [target_images[1].subject]}
    made = subject_stores(target_images, list(reversed(entries)), split, CONFIG.slice_shape)
    assert list(made) == ["train", "validation"]
    assert [len(store) for store in made.values()] == [len(store) for store in stores]
    assert len(subject_stores(target_images, entries, {"none": []}, CONFIG.slice_shape)["none"]) == 0


def test_assemble_model_records_statistics_and_training(stores, target_images):
    train, validation = stores
    flow = build_flow(TINY, SHAPE)
    history = [{"step": 12, "train_bpd": 3.5, "val_bpd": 3.25, "learning_rate": 0.0, "seconds": 4.0}]
    settings = _settings(validation_slices=16)
    sources = [image.path for image in target_images]
    model = assemble_model(flow, TINY, CONFIG, {"train": train, "validation": validation}, history, settings,
                           target={"scanners": []}, preset="small", sources=sources,
                           device=torch.device("cpu"), processes=1, started=0.0, command="train x")
    assert model.flow is flow and not flow.training and model.shape == SHAPE and model.target == {"scanners": []}
    assert model.mean_slices.shape == (CONFIG.n_positions,) + CONFIG.slice_shape
    assert model.quantiles.shape == (CONFIG.n_positions, len(QUANTILES))
    record = model.training
    assert record["training_slices_per_second"] == round(12 * 8 / 4.0, 2)
    assert (record["validation_bpd"], record["train_bpd"]) == (3.25, 3.5)
    assert record["gaussian_baseline_validation_bpd"] == round(gaussian_baseline_bits_per_dim(
        train, validation, validation_rows(validation, 16)), 5)
    assert record["data_fingerprint"] == image_fingerprint(sources)
    assert (record["preset"], record["steps"], record["batch_size"], record["seed"]) == ("small", 12, 8, 3)
    assert (record["training_slices"], record["validation_slices"]) == (len(train), len(validation))
    assert (record["device"], record["processes"], record["command"]) == ("cpu", 1, "train x")
    assert set(record["versions"]) == {"python", *RECORDED_PACKAGES}


def test_train_command_end_to_end(coarse_dataset, tmp_path):
    model = tmp_path / "trio.pt"
    flow_config = tmp_path / "flow.json"
    flow_config.write_text('{"hidden_channels": [8, 8, 16, 16]}')
    result = subprocess.run(_train_command(coarse_dataset, model, tmp_path / "work", "--nprocs", "2",
                                           "--flow-config", str(flow_config), "--keep-best"),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert load_model(model).flow_config.hidden_channels == (8, 8, 16, 16)
    assert "selected 2 T1w image(s) of 2 subject(s)" in result.stdout
    assert "StationName=TRIO-A" in result.stdout
    loaded = load_model(model)
    assert loaded.target["scanners"][0]["StationName"] == "TRIO-A"
    assert loaded.training["steps"] == 3 and np.isfinite(loaded.training["validation_bpd"])
    assert loaded.training["weights"] == "best validation, step 3"  # --keep-best; one validation
    assert loaded.mean_slices[64].max() > 0.5
    # the QC calibration, measured on the validation subject at the end of training
    assert loaded.calibration["subjects"] == loaded.target["validation_subjects"]
    assert np.isfinite(loaded.calibration["bits_per_dim"]["threshold"])
    assert (tmp_path / "trio_samples.png").stat().st_size > 10_000
    assert (tmp_path / "trio_training.csv").read_text().count("\n") == 2

    mixed = subprocess.run(_train_command(coarse_dataset, tmp_path / "mixed.pt", tmp_path / "work",
                                          target="ManufacturersModelName=TrioTim"), capture_output=True, text=True)
    assert mixed.returncode != 0 and "mixes 2 scanners" in mixed.stderr
    exists = subprocess.run(_train_command(coarse_dataset, model, tmp_path / "work"),
                            capture_output=True, text=True)
    assert exists.returncode != 0 and "model file exists" in exists.stderr
    flow_config.write_text('{"levels": 0}')
    refused = subprocess.run(_train_command(coarse_dataset, tmp_path / "bad.pt", tmp_path / "work",
                                            "--flow-config", str(flow_config)), capture_output=True, text=True)
    assert refused.returncode != 0 and f"{flow_config}: FlowConfig.levels" in refused.stderr
    assert not (tmp_path / "bad.pt").exists()


def test_distributed_gloo_run_matches_a_single_process(coarse_dataset, tmp_path):
    """Two CPU processes (torchrun, gloo) train the very model one process trains (no QC
    calibration: the end-to-end test has it)."""
    single = tmp_path / "single.pt"
    result = subprocess.run(_train_command(coarse_dataset, single, tmp_path / "work", "--skip-calibration"),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    distributed = tmp_path / "ddp.pt"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "bids_harmony.cli.train"] + _train_command(coarse_dataset, distributed,
                                                                  tmp_path / "work", "--skip-calibration")[3:]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = load_model(single), load_model(distributed)
    assert b.training["processes"] == 2 and a.calibration is None and b.calibration is None
    assert b.training["train_bpd"] == pytest.approx(a.training["train_bpd"], abs=1e-4)
    assert b.training["validation_bpd"] == pytest.approx(a.training["validation_bpd"], abs=1e-3)
    differences = torch.cat([(x - y).abs().flatten() for (_, x), (_, y)
                             in zip(a.flow.state_dict().items(), b.flow.state_dict().items())
                             if x.is_floating_point()])
    # round-off only (Adam turns some near-zero gradients' round-off into lr-sized steps)
    assert float(differences.quantile(0.99)) < 1e-5


def test_bundled_demo_model_beats_a_per_pixel_gaussian_on_new_data(stores):
    """The shipped model, on a simulated dataset (seed 7) it was not trained on.

    A per-pixel Gaussian fitted to one of its target subjects and scored on the other knows
    this dataset's intensities; the flow, trained elsewhere, must still beat it clearly.
    """
    from bids_harmony.model import PRESETS, bundled_model_path

    path = bundled_model_path()
    assert path.stat().st_size < 20 * 2**20
    model = load_model()
    assert model.flow_config == PRESETS["small"] and model.preprocessing == CONFIG
    assert model.target["scanners"][0]["StationName"] == "TRIO-A"
    assert model.training["validation_bpd"] < model.training["gaussian_baseline_validation_bpd"] - 0.5
    train, validation = stores
    rows = validation_rows(validation, 64)
    flow_bpd = evaluate_bits_per_dim(model.flow, validation, rows, torch.device("cpu"))
    baseline_bpd = gaussian_baseline_bits_per_dim(train, validation, rows)
    assert np.isfinite(flow_bpd) and flow_bpd < baseline_bpd - 0.5, (flow_bpd, baseline_bpd)
