"""The command line of the BIDS-App, without running a workflow: options, settings, plugins."""
import argparse
import dataclasses

import pytest

from bids_harmony.cli.parser import build_parser
from bids_harmony.cli.participant import crash_problem, limit_multiproc, plugin_settings, submits_only
from bids_harmony.errors import InputError, SettingsError
from bids_harmony.settings import HarmonizationParams, flag_of, settings_from_arguments


def _parse(*options):
    return build_parser().parse_args(["bids", "out", "participant", *options])


def test_fmriprep_aliases_reach_the_same_options():
    for spelling in (["--participant_label", "01"], ["--participant-label", "sub-01"]):
        assert _parse(*spelling).participant_label in (["01"], ["sub-01"])
    for flag in ("--nprocs", "--nthreads", "--n_cpus", "--n-cpus"):
        assert _parse(flag, "3").nprocs == 3
    assert _parse("--skip_bids_validation").skip_bids_validation
    assert _parse("--omp_nthreads", "2").omp_nthreads == 2
    assert str(_parse("-w", "/tmp/w").work_dir) == "/tmp/w"


def test_every_setting_has_an_option_and_unset_ones_stay_unset():
    """Generated from the dataclass: the settings no command reached before are there too, and an
    option not given never overrides the defaults (or a preset)."""
    help_text = build_parser().format_help()
    for item in dataclasses.fields(HarmonizationParams):
        assert flag_of(item) in help_text
    for flag in ("--highpass-radius", "--edge-threshold", "--foreground-threshold"):
        assert flag in help_text
    args = _parse()
    assert not any(hasattr(args, item.name) for item in dataclasses.fields(HarmonizationParams))
    assert settings_from_arguments(args) == HarmonizationParams()
    preset = HarmonizationParams.preset("camera-ready")
    assert settings_from_arguments(_parse("--method", "camera-ready")) == preset
    changed = settings_from_arguments(_parse("--method", "camera-ready", "--beta1", "0.2", "--target-background",
                                             "--harmonize-batch-size", "8", "--edge", "sobel-sign"))
    assert (changed.beta1, changed.target_background, changed.batch_size, changed.edge) == (0.2, True, 8, "sobel-sign")
    assert changed.iterations == 10 and changed.fidelity == "cosine"  # the rest is camera-ready's
    assert changed.method() == ("camera-ready", {"beta1": 0.2, "edge": "sobel-sign", "target_background": True,
                                                 "batch_size": 8})


def test_help_says_what_the_demo_model_is(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    assert "trained on simulated heads only" in " ".join(capsys.readouterr().out.split())


def test_settings_round_trip_and_refuse_unknown_keys():
    params = HarmonizationParams(beta2=0.25, edge="sobel-sign")
    assert HarmonizationParams.from_dict(params.to_dict()) == params
    with pytest.raises(SettingsError, match="unknown harmonization setting.*gamma"):
        HarmonizationParams.from_dict({**params.to_dict(), "gamma": 1})
    with pytest.raises(SettingsError, match="iterations must be int"):
        HarmonizationParams(iterations=2.5)
    with pytest.raises(SettingsError, match="beta1 must be a non-negative"):
        HarmonizationParams(beta1=float("nan"))


def test_settings_module_does_not_import_torch():
    import subprocess
    import sys

    probe = "import sys, bids_harmony.settings, bids_harmony.cli.parser; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_plugin_file_in_fmriprep_format(tmp_path):
    plugin = tmp_path / "plugin.yml"
    plugin.write_text("plugin: MultiProc\nplugin_args:\n  n_procs: 6\n  maxtasksperchild: 1\n")
    settings, node_args = plugin_settings(plugin)
    assert settings == {"plugin": "MultiProc", "plugin_args": {"n_procs": 6, "maxtasksperchild": 1}}
    assert node_args == {}
    limit_multiproc(settings["plugin_args"], argparse.Namespace(nprocs=2, mem_gb=8.0), "cpu")
    assert settings["plugin_args"] == {"n_procs": 6, "maxtasksperchild": 1, "memory_gb": 8.0, "n_gpu_procs": 0,
                                       "raise_insufficient": True}
    assert plugin_settings(None) == ({"plugin": "MultiProc", "plugin_args": {}}, {})
    plugin.write_text("plugin: SLURMGraph\nplugin_args:\n  sbatch_args: --time=1:00:00\n"
                      "harmonize_plugin_args:\n  sbatch_args: --gres=gpu:1\n")
    assert plugin_settings(plugin) == ({"plugin": "SLURMGraph", "plugin_args": {"sbatch_args": "--time=1:00:00"}},
                                       {"sbatch_args": "--gres=gpu:1"})
    assert submits_only("SLURMGraph") and not submits_only("MultiProc") and not submits_only("SLURM")


@pytest.mark.parametrize("content, problem", [
    ("- not\n- a mapping\n", "has 'plugin:'"),
    ("plugin: SLURMGrpah\n", "no plugin 'SLURMGrpah'"),
    ("plugin: SLURMGraph\nharmonise_plugin_args: {}\n", "unknown key(s) harmonise_plugin_args"),
    ("plugin: SLURMGraph\nharmonize_plugin_args: --gres=gpu:1\n", "'harmonize_plugin_args:' must be a mapping"),
    ("plugin: [SLURMGraph\n", "not a readable plugin settings file"),
])
def test_bad_plugin_file_is_one_line(tmp_path, content, problem):
    plugin = tmp_path / "plugin.yml"
    plugin.write_text(content)
    with pytest.raises(InputError, match="plugin.yml") as raised:
        plugin_settings(plugin)
    assert problem in str(raised.value)


def test_crash_file_gives_one_line(tmp_path):
    crash = tmp_path / "crash-x.txt"
    crash.write_text("Node: prepare\nTraceback:\n  File x\nbids_harmony.errors.InputError: /d/sub-01_T1w.nii.gz: "
                     "contains NaN or infinite values\n")
    assert crash_problem(crash) == "/d/sub-01_T1w.nii.gz: contains NaN or infinite values"
    crash.write_text("Node: harmonize\nTraceback:\nZeroDivisionError: division by zero\n")
    assert crash_problem(crash).startswith("unexpected error (ZeroDivisionError: division by zero)")
