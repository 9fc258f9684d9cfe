"""``bids_harmony-demo``'s own parts (the whole demo is a user command, not a CI step): its
table, read from the shared participant run's real QC outputs, and its refusal to write into a
folder that holds anything else."""
import pytest

from bids_harmony.cli.demo import BIDS, distance_table, main
from bids_harmony.errors import OutputExistsError
from bids_harmony.reports.group import OK, collect


def test_distance_table_from_a_participant_run(participant_run):
    assert participant_run.qc_returncode == 0, participant_run.qc_stderr[-3000:]
    runs = collect(participant_run.output_dir).with_status(OK)
    assert len(runs) >= 2
    target = runs[-1].scanner
    lines = distance_table(runs, target)
    header, rule, *rows, spread = lines
    assert header.count("|") == rule.count("|") == 5
    assert len(rows) == len(runs) and rows[0].startswith(f"| {target} (target) |")
    for run, row in zip(sorted(runs, key=lambda run: (run.scanner != target, run.scanner)), rows):
        before, after = run.value("wm_gm_contrast", "source"), run.value("wm_gm_contrast", "harmonized")
        assert f"{before:.3f} -> {after:.3f}" in row
    assert spread.startswith("| spread across scanners (SD) |") and "n/a" not in spread


def test_refuses_a_folder_with_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    for argv in ([str(tmp_path)], [str(tmp_path), "--overwrite"]):
        with pytest.raises(OutputExistsError, match="not empty"):
            main(argv)
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]
    assert not (tmp_path / BIDS).exists()
