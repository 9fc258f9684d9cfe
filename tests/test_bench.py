"""bids_harmony-bench: simulated domains, metrics, the histogram-matching baseline, the CLI."""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from bids_harmony.bench import (
    CENTRAL_SLICES,
    SIMULATED_DOMAINS,
    benchmark_methods,
    build_cases,
    candidate_slices,
    domain_label,
    histogram_match,
    method_functions,
    method_label,
    psnr,
    simulate_domain,
    ssim,
    take_slices,
    trained_subjects,
)
from bids_harmony.bench.metrics import MAX_PSNR_DB
from bids_harmony.bench.tissue import TISSUE_SCORES
from bids_harmony.bench.volumes import VOLUME_SCORES
from bids_harmony.bids.selection import SelectedImage
from bids_harmony.harmonize import HarmonizationParams
from bids_harmony.cli.bench import main as bench_main
from bids_harmony.errors import BidsError, InputError


def test_simulated_domains_are_the_papers_monotone_maps():
    assert list(SIMULATED_DOMAINS) == ["exp", "log", "gamma0.7", "gamma0.8", "gamma0.9",
                                       "gamma1.2", "gamma1.3", "gamma1.5"]
    rng = np.random.default_rng(0)
    slices = rng.random((2, 12, 10)).astype(np.float32)
    for name in SIMULATED_DOMAINS:
        mapped = simulate_domain(slices, name)
        assert mapped.shape == slices.shape and mapped.dtype == np.float32
        for before, after in zip(slices, mapped):
            assert after.min() == 0.0 and after.max() == pytest.approx(1.0)
            order = np.argsort(before, axis=None)
            assert np.all(np.diff(after.ravel()[order]) >= -1e-6)  # monotone increasing
    g = slices[0]
    expected = g ** 1.5
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    assert np.allclose(simulate_domain(slices, "gamma1.5")[0], expected, atol=1e-6)
    with pytest.raises(ValueError, match="unknown simulated domain"):
        simulate_domain(slices, "gamma2")


def test_psnr_and_ssim_whole_and_masked():
    rng = np.random.default_rng(1)
    reference = rng.random((40, 40))
    assert psnr(reference, reference) == MAX_PSNR_DB
    assert psnr(reference + 0.1, reference) == pytest.approx(20.0)
    mask = np.zeros_like(reference, bool)
    mask[10:30, 10:30] = True
    damaged = reference.copy()
    damaged[~mask] += 0.3  # damage outside the mask only
    assert psnr(damaged, reference, mask) == MAX_PSNR_DB
    assert psnr(damaged, reference) < 15
    assert ssim(reference, reference) == pytest.approx(1.0)
    assert ssim(damaged, reference, mask) > ssim(damaged, reference)


def test_histogram_matching_takes_the_target_quantiles_at_the_position():
    rng = np.random.default_rng(2)
    levels = np.linspace(0, 1, 101)
    target = np.stack([np.quantile(rng.beta(2, 5, 5000), levels), np.quantile(rng.beta(5, 2, 5000), levels)])
    source = rng.random((2, 60, 60)).astype(np.float32) * 0.9 + 0.05  # uniform, all "head"
    matched = histogram_match(source, np.array([0, 1]), target)
    for image, wanted in zip(matched, target):
        assert np.allclose(np.quantile(image, [0.1, 0.5, 0.9]), wanted[[10, 50, 90]], atol=0.02)
    # a slice already distributed as the target comes back (nearly) unchanged
    already = np.clip(rng.beta(2, 5, (1, 60, 60)), 0.03, 1).astype(np.float32)
    quantiles = np.quantile(already, levels)[None]
    assert psnr(histogram_match(already, np.array([0]), quantiles)[0], already[0]) > 35


def test_take_slices_spreads_the_budget_over_the_subjects():
    subjects = [SimpleNamespace(slices=np.zeros((count, 2, 2))) for count in (10, 0, 30)]
    taken = take_slices(subjects, 8)
    assert [subject for subject, _ in taken] == [subjects[0], subjects[2]]  # none for the empty one
    assert sum(len(rows) for _, rows in taken) == 8 and [len(rows) for _, rows in taken] == [2, 6]
    assert all(rows.max() < len(subject.slices) for subject, rows in taken)
    everything = take_slices(subjects, 100)
    assert [len(rows) for _, rows in everything] == [10, 30]


def test_trained_subjects_only_of_the_training_dataset(tmp_path):
    model = SimpleNamespace(target={"dataset": str(tmp_path), "training_subjects": ["01", "02"]})
    assert trained_subjects(model, tmp_path / ".") == {"01", "02"}
    assert trained_subjects(model, tmp_path / "other") == set()
    assert trained_subjects(SimpleNamespace(target={}), tmp_path) == set()


def test_domain_label_prefers_the_participants_domain():
    image = SelectedImage(Path("sub-03_T1w.nii.gz"), "03", None,
                          {"ManufacturersModelName": "Prisma", "MagneticFieldStrength": 3, "StationName": "P1"})
    assert domain_label(image, {"03": {"domain": "Domain 2"}}) == "Domain 2: Prisma 3T"
    assert domain_label(image, {}) == "Prisma 3T (P1)"


def test_benchmark_columns_are_named_by_method():
    model = SimpleNamespace(quantiles=None)
    columns = benchmark_methods(model, HarmonizationParams(), compared=(), ablated=None)
    assert list(columns) == ["none", "histogram matching", "bids_harmony"]
    slices = np.zeros((1, 4, 4))
    assert method_functions(model, columns)["none"](slices, np.zeros(1)) is slices
    columns = benchmark_methods(model, HarmonizationParams(iterations=2))  # camera-ready beside, and ablated
    assert list(columns)[2:] == ["bids_harmony (iterations=2)", "camera-ready", "camera-ready alpha=0",
                                 "camera-ready beta1=0", "camera-ready beta2=0"]
    assert columns["camera-ready"] == HarmonizationParams.preset("camera-ready")
    assert columns["camera-ready alpha=0"] == HarmonizationParams.preset("camera-ready").replace(alpha=0, alpha2=0)
    same = benchmark_methods(model, HarmonizationParams.preset("camera-ready"), ablated=None)
    assert list(same) == ["none", "histogram matching", "camera-ready"]  # not twice
    assert method_label(HarmonizationParams.preset("arxiv-v1").replace(beta2=0)) == "arxiv-v1 (beta2=0.0)"


def test_protocols_choose_the_candidate_slices():
    valid = np.ones(128, bool)
    valid[:10] = False
    area = np.concatenate([np.zeros(20), np.full(88, 100.0), np.zeros(20)])
    area[20] = 5.0  # under MIN_BRAIN_SHARE of the largest
    positions = np.arange(128)
    assert np.array_equal(candidate_slices(valid, positions, area, 128), np.arange(21, 108))
    assert np.array_equal(candidate_slices(valid, positions, area, 128, "authors"), np.arange(39, 89))


def test_build_cases_refuses_an_empty_budget(tmp_path):
    with pytest.raises(InputError, match="at least 1") as error:
        build_cases(SimpleNamespace(target={}), tmp_path, max_slices=0)
    assert "--" not in str(error.value)


@pytest.fixture(scope="module")
def bench_run(multiscanner_dataset, tmp_path_factory):
    output = tmp_path_factory.mktemp("bench") / "out"
    code = bench_main([str(multiscanner_dataset), str(output), "--max-slices", "2", "--domains", "exp",
                       "gamma1.5", "--participant-label", "01", "02", "03", "--iterations", "2",
                       "--no-target-background", "--protocol", "authors", "--ablate", "arxiv-v1"])
    return code, output


def test_bench_writes_the_papers_tables(bench_run):
    code, output = bench_run
    assert code == 0
    scores = pd.read_csv(output / "bench_scores.csv")
    ours = "bids_harmony (iterations=2, target_background=False)"
    methods = ["none", "histogram matching", ours, "camera-ready", "arxiv-v1 alpha=0", "arxiv-v1 beta1=0",
               "arxiv-v1 beta2=0"]
    assert list(dict.fromkeys(scores["method"])) == methods
    first = (128 - CENTRAL_SLICES) // 2  # --protocol authors: the central slices only
    assert scores["position"].between(first, first + CENTRAL_SLICES - 1).all()
    assert set(scores["subject"].astype(str).str.zfill(2)) == {"01", "02", "03"}
    domains = set(scores["domain"])
    assert {"exp", "gamma1.5"} <= domains
    assert any(domain.startswith("Domain 1") for domain in domains)
    assert any(domain.startswith("Domain 2") for domain in domains)
    assert scores[["psnr", "ssim", "psnr_brain", "ssim_brain"]].notna().all().all()
    assert (scores.groupby(["domain", "method"]).size() == 2).all()  # --max-slices per domain
    none = scores[scores["method"] == "none"]
    assert none[none["domain"] == "exp"]["psnr"].between(10, 60).all()
    summary = pd.read_csv(output / "bench_summary.csv")
    assert {"psnr_mean", "psnr_std", "ssim_brain_mean", "seconds_per_slice", "slices"} <= set(summary.columns)
    table = (output / "bench_summary.md").read_text()
    assert "| exp (simulated) | 2 |" in table and "arxiv-v1 beta1=0" in table
    assert f"- {ours}: anchor_level, smooth_across_slices" in table  # our additions, named
    settings = json.loads((output / "bench_settings.json").read_text())
    assert settings["parameters"]["iterations"] == 2 and settings["model_sha256"]
    assert settings["parameters"]["target_background"] is False and settings["protocol"] == "authors"
    assert settings["methods"]["camera-ready"]["method"] == {"name": "camera-ready", "changed": {}}
    assert settings["methods"][ours]["additions_to_the_paper"] == ["anchor_level", "smooth_across_slices"]
    assert (output / "bench_panel.png").stat().st_size > 10_000
    assert not (output / "bench_volumes.csv").exists()  # without --volumes


def test_bench_scores_tissue_contrast_on_the_slices(bench_run):
    code, output = bench_run
    tissue = pd.read_csv(output / "bench_tissue.csv")
    assert len(tissue) == len(tissue[["domain", "subject", "method"]].drop_duplicates())  # one row per case
    assert tissue[list(TISSUE_SCORES)].notna().all().all()
    none = tissue[tissue["method"] == "none"]
    simulated = none[none["kind"] == "simulated"].set_index("domain")
    # both maps are convex: they stretch the bright end (WM gains on GM) and darken CSF against WM
    for domain in ("exp", "gamma1.5"):
        assert (simulated.loc[[domain], "wm_gm_gap"] > 0.05).all() and (simulated.loc[[domain], "csf_wm_gap"] < 0).all()
    assert (simulated.loc[["gamma1.5"], "wm_gm_gap"].values > simulated.loc[["exp"], "wm_gm_gap"].values).all()
    assert (none["brain_rmse"] > 0).all()
    table = (output / "bench_summary.md").read_text()
    assert "Tissue contrast on the scored slices" in table and "Tissue contrast of whole volumes" not in table


def test_bench_volumes_scores_whole_volumes(multiscanner_dataset, tmp_path):
    output = tmp_path / "out"
    assert bench_main([str(multiscanner_dataset), str(output), "--max-slices", "2", "--domains", "exp",
                       "--participant-label", "01", "04", "--iterations", "1", "--compare", "--no-ablations",
                       "--volumes"]) == 0
    volumes = pd.read_csv(output / "bench_volumes.csv")
    assert list(volumes["method"]) == ["none", "histogram matching", "bids_harmony (iterations=1)"]
    assert set(volumes["subject"].astype(str).str.zfill(2)) == {"04"} and set(volumes["kind"]) == {"paired"}
    assert volumes[[*VOLUME_SCORES, "seconds"]].notna().all().all()
    assert volumes["domain"].str.startswith("Domain").all()
    table = (output / "bench_summary.md").read_text()
    assert "Tissue contrast of whole volumes on the native grid" in table
    assert json.loads((output / "bench_settings.json").read_text())["volumes"] is True


def test_bench_refuses_to_overwrite_and_bad_input(bench_run, multiscanner_dataset, tmp_path):
    code, output = bench_run
    with pytest.raises(InputError, match="earlier results"):
        bench_main([str(multiscanner_dataset), str(output)])
    with pytest.raises(InputError, match="cannot go with --no-paired"):
        bench_main([str(multiscanner_dataset), str(tmp_path / "out"), "--volumes", "--no-paired"])
    with pytest.raises(InputError, match="no such directory"):
        bench_main([str(tmp_path / "missing"), str(tmp_path / "out")])
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    with pytest.raises(BidsError, match="groundtruth"):
        bench_main([str(plain), str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
