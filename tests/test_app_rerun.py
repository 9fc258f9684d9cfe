"""Running like a NiPreps app: a killed run resumes from its finished nodes, a rerun after success
recomputes nothing, one more subject runs only the new one (one iteration and ``--skip-qc``: the
caching is what is tested; same inputs giving the same image data is in test_app.py)."""
import json
import os
import signal
import subprocess
import sys
import time

from bids_harmony.bids.derivatives import harmonized_t1w_path

PROCESSING_NODES = ("prepare", "harmonize", "reassemble")


def _command(dataset, output_dir, work_dir, *labels, extra=()):
    return [sys.executable, "-m", "bids_harmony.cli.run", str(dataset), str(output_dir), "participant",
            "--model", "demo", "-w", str(work_dir), "--nprocs", "2", "--skip-bids-validation", "--iterations", "1",
            "--skip-qc", "--participant-label", *labels, *extra]


def _run(command, cwd=None):
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "NIPYPE_NO_ET": "1"},
                            timeout=1200, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def _started(log, subject):
    return [node for node in PROCESSING_NODES if f"{subject} T1w: {node} started" in log]


def _outputs(output_dir, subject):
    return sorted(path.name for path in (output_dir / subject / "anat").glob("*")) if (
        output_dir / subject / "anat").is_dir() else []


def test_kill_resume_rerun_and_one_more_subject(coarse_dataset, tmp_path):
    output_dir, work_dir = tmp_path / "out", tmp_path / "work"
    command = _command(coarse_dataset, output_dir, work_dir, "01", "02")
    finished = work_dir / "bids_harmony_wf" / "sub_01_wf" / "harmonize_T1w_wf" / "harmonize" / "result_harmonize.pklz"
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True,
                                   env={**os.environ, "NIPYPE_NO_ET": "1"})
        deadline = time.monotonic() + 600
        while not finished.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert finished.exists(), (tmp_path / "killed.log").read_text()[-2000:]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    for subject in ("sub-01", "sub-02"):  # outputs appear only when complete
        names = _outputs(output_dir, subject)
        assert names == [] or f"{subject}_desc-harmonized_T1w.nii.gz" in names and len(names) == 5, names

    resumed = _run(command)
    assert _started(resumed, "sub-01") == ["reassemble"] or _started(resumed, "sub-01") == []
    assert "2 T1w run(s) harmonized, 0 failed" in resumed

    again = _run(command)
    assert _started(again, "sub-01") == [] and _started(again, "sub-02") == []
    assert "2 T1w run(s) harmonized, 0 failed" in again

    user_folder = tmp_path / "where_the_user_is"
    user_folder.mkdir()
    more = _run(_command(coarse_dataset, output_dir, work_dir, "01", "02", "03", extra=["--resource-monitor"]),
                cwd=user_folder)
    assert list(user_folder.iterdir()) == []  # the monitor's files stay in the work dir
    assert _started(more, "sub-01") == [] and _started(more, "sub-02") == []
    assert _started(more, "sub-03") == list(PROCESSING_NODES)
    for subject in ("01", "02", "03"):
        source = coarse_dataset / f"sub-{subject}" / "anat" / f"sub-{subject}_T1w.nii.gz"
        assert harmonized_t1w_path(source, coarse_dataset, output_dir).is_file()
    (resources,) = (output_dir / "logs").glob("resources-*.jsonl")
    records = [json.loads(line) for line in resources.read_text().splitlines() if line.strip()]
    measured = {record["name"]: record for record in records
                if isinstance(record.get("runtime_memory_gb"), float)}  # "N/A" for cached nodes
    for node in PROCESSING_NODES:
        assert measured[node]["runtime_memory_gb"] > 0 and measured[node]["duration"] > 0, records
    assert not any(name in measured for name in ("brain_mask", "segment_source", "metrics"))  # --skip-qc
    assert list(output_dir.rglob("*_desc-qc_metrics.json")) == [] and list(output_dir.rglob("*_dseg*")) == []
