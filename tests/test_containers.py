"""The container recipes, the pinned requirements and the SLURM scripts (docs/containers.md).

No image can be built here (no Docker daemon, no Apptainer): what can be checked offline is,
that hadolint accepts the Dockerfile, that its instructions say what the docs promise, that the
pins are the versions the tests run on, that the Apptainer recipe parses, and that the SLURM
scripts pass shellcheck and do the right thing against stand-in ``sbatch`` and ``apptainer``.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import bids_harmony

REPOSITORY = Path(__file__).resolve().parents[1]
DOCKERFILE = REPOSITORY / "Dockerfile"
REQUIREMENTS = REPOSITORY / "requirements.txt"
SLURM = REPOSITORY / "scripts" / "slurm"
OCI_LABELS = ("title", "version", "source", "licenses", "description")
#: installed first on its own (CPU build in CI, the base image's CUDA build in the Dockerfile)
TORCH = "torch"
#: in the closure (tensorboard requires it) but, as with pip freeze, left to the environment
LEFT_TO_ENVIRONMENT = {"setuptools", "pip", "wheel"}


# ---- helpers


def _tool(name: str) -> str:
    beside_python = Path(sys.executable).parent / name  # a venv that is not on PATH
    found = str(beside_python) if beside_python.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (it is part of the [test] extra / CI's packages)")
    return found


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'" else value


def _stages() -> list[list]:
    """The Dockerfile's instructions, one list per stage (the ARGs before the first FROM apart)."""
    import dockerfile

    stages: list[list] = [[]]
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd.upper() == "FROM":
            stages.append([])
        stages[-1].append(command)
    return stages


def _pairs(command) -> dict[str, str]:
    """``KEY=value`` / ``KEY value`` arguments of ENV, LABEL and ARG, unquoted."""
    values = list(command.value)
    if all("=" in value for value in values):
        return dict((key, _unquote(value)) for key, value in (item.split("=", 1) for item in values))
    return {values[index]: _unquote(values[index + 1]) for index in range(0, len(values) - 1, 2)}


def _collect(stage, instruction: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for command in stage:
        if command.cmd.upper() == instruction:
            found.update(_pairs(command))
    return found


def _pins() -> dict[str, tuple[str, str]]:
    """requirements.txt: canonical name -> (line, version)."""
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        (specifier,) = list(requirement.specifier) or [None]
        assert specifier is not None and specifier.operator == "==", f"requirements.txt: {line} is not pinned with =="
        pins[canonicalize_name(requirement.name)] = (line, specifier.version)
    return pins


def _runtime_closure() -> dict[str, str]:
    """The installed distributions bids_harmony needs at run time (its requirements, theirs, and
    so on, with the extras asked for and the markers of this python), torch's own left out."""
    installed = {canonicalize_name(dist.metadata["Name"]): dist for dist in metadata.distributions()}
    wanted: dict[str, set[str]] = {}
    pending = [("bids_harmony", frozenset())]
    while pending:
        name, extras = pending.pop()
        key = canonicalize_name(name)
        if key == TORCH or (key in wanted and extras <= wanted[key]):
            continue
        wanted.setdefault(key, set()).update(extras)
        assert key in installed, f"{name} is required but not installed"
        for line in installed[key].requires or []:
            requirement = Requirement(line)
            environments = [{"extra": extra} for extra in ["", *sorted(wanted[key])]]
            if requirement.marker is None or any(requirement.marker.evaluate(env) for env in environments):
                pending.append((requirement.name, frozenset(requirement.extras)))
    wanted.pop("bids-harmony")
    return {key: installed[key].version for key in wanted if key not in LEFT_TO_ENVIRONMENT}


# ---- Dockerfile


def test_hadolint_passes_at_warning_level():
    result = subprocess.run([_tool("hadolint"), "--failure-threshold", "warning", str(DOCKERFILE)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_an_unpinned_install(tmp_path):
    """The check above can fail: the same call refuses an unpinned pip install."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN pip install --no-cache-dir numpy\nUSER 1000\n")
    result = subprocess.run([_tool("hadolint"), "--failure-threshold", "warning", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "DL3013" in result.stdout


def test_dockerfile_final_stage():
    final = _stages()[-1]
    (entrypoint,) = [command for command in final if command.cmd.upper() == "ENTRYPOINT"]
    assert entrypoint.json and list(entrypoint.value) == ["bids_harmony"]
    users = [command.value[0] for command in final if command.cmd.upper() == "USER"]
    assert users, "the final stage has no USER"
    assert users[-1].split(":")[0] not in ("root", "0")

    arguments = _collect(final, "ARG")
    assert arguments["VERSION"] == bids_harmony.__version__
    labels = _collect(final, "LABEL")
    for label in OCI_LABELS:
        assert labels.get(f"org.opencontainers.image.{label}"), f"OCI label {label} missing"
    version = labels["org.opencontainers.image.version"]
    assert version.replace("${VERSION}", arguments["VERSION"]) == bids_harmony.__version__
    assert labels["org.opencontainers.image.licenses"] == metadata.metadata("bids_harmony")["License"]

    environment = _collect(final, "ENV")
    assert environment["NIPYPE_NO_ET"] == "1"
    assert environment["TEMPLATEFLOW_HOME"].startswith("/")
    for variable in ("HOME", "MPLCONFIGDIR"):
        assert environment[variable].startswith("/tmp"), f"{variable} must be writable by any uid"
    runs = " ".join(command.value[0] for command in final if command.cmd.upper() == "RUN")
    assert f"seed_templateflow_home('{environment['TEMPLATEFLOW_HOME']}')" in runs


def _pip_installs(run: str) -> list[list[str]]:
    lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:  # one list of words per command of the shell line
        if token in ("&&", "||", ";", "|"):
            commands.append([])
        else:
            commands[-1].append(token)
    calls = []
    for words in commands:
        for index in range(len(words) - 1):
            if words[index] in ("pip", "pip3") and words[index + 1] == "install":
                calls.append(words[index + 2:])
            elif words[index].startswith("python") and words[index + 1:index + 4] == ["-m", "pip", "install"]:
                calls.append(words[index + 4:])
    return calls


def test_dockerfile_installs_only_pinned_requirements_and_the_wheel():
    stages = _stages()
    calls = [call for stage in stages for command in stage if command.cmd.upper() == "RUN"
             for call in _pip_installs(command.value[0])]
    assert len(calls) >= 2, "expected pip install -r requirements.txt and the wheel"
    kinds = set()
    for call in calls:
        arguments = [word for word in call if word not in ("--no-cache-dir", "-q", "--quiet", "--no-deps")]
        if arguments[:1] == ["-r"]:
            assert len(arguments) == 2 and arguments[1].endswith("/requirements.txt"), call
            kinds.add("requirements")
        else:
            assert arguments and all(word.endswith(".whl") for word in arguments), f"unpinned: pip install {call}"
            assert all(Path(word).name.startswith("bids_harmony-") for word in arguments), call
            kinds.add("wheel")
    assert kinds == {"requirements", "wheel"}
    copies = [command.value for command in stages[-1] if command.cmd.upper() == "COPY"]
    assert any(value[0] == "requirements.txt" for value in copies)
    builds = [command.value[0] for command in stages[1] if command.cmd.upper() == "RUN"]
    assert any(run.startswith("pip wheel") and "--no-deps" in run for run in builds)


def test_build_stage_copies_enough_for_the_wheel(tmp_path):
    """The wheel built from only what the build stage copies carries the model and workflows/."""
    import zipfile

    build = _stages()[1]
    context = tmp_path / "context"
    for command in build:
        if command.cmd.upper() == "COPY":
            *sources, destination = command.value
            for source in sources:
                target = context / (source if destination.endswith("./") else destination)
                if (REPOSITORY / source).is_dir():
                    shutil.copytree(REPOSITORY / source, target,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(REPOSITORY / source, target)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "wheels"), str(context)], check=True, capture_output=True, text=True)
    (wheel,) = (tmp_path / "wheels").glob("bids_harmony-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "bids_harmony/data/demo_model.pt" in names
    assert "bids_harmony/workflows/harmonize.py" in names


def test_dockerignore_keeps_local_state_out():
    patterns = {line.strip() for line in (REPOSITORY / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    for pattern in (".git", ".venv*", "**/__pycache__", "*.egg-info", "build/", "dist/", "docs/_build", "work/"):
        assert pattern in patterns, pattern
    copied = {command.value[0].rstrip("/") for stage in _stages() for command in stage
              if command.cmd.upper() == "COPY" and not command.flags}
    assert not copied & {pattern.rstrip("/") for pattern in patterns}, "a COPY source is ignored"


# ---- requirements.txt and CI


def test_requirements_pin_the_runtime_closure():
    pins = _pins()
    assert TORCH not in pins and not any(name.startswith(("nvidia-", "triton")) for name in pins)
    # every requirement of the package is there, with a version it accepts
    for line in metadata.requires("bids_harmony"):
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue  # the [test] extra
        name = canonicalize_name(requirement.name)
        if name == TORCH:
            continue
        assert name in pins, f"requirements.txt lacks {requirement}"
        assert requirement.specifier.contains(pins[name][1], prereleases=True), \
            f"requirements.txt: {pins[name][0]} does not satisfy {requirement}"
    # and exactly the runtime closure, at the versions the tests run on
    closure = _runtime_closure()
    assert sorted(set(closure) - set(pins)) == [], "runtime dependencies missing from requirements.txt"
    assert sorted(set(pins) - set(closure)) == [], "requirements.txt pins what nothing needs at run time"
    differ = {name: (pins[name][1], version) for name, version in closure.items() if pins[name][1] != version}
    assert differ == {}, "pinned != installed (regenerate requirements.txt, see its header)"


def test_requirements_header_says_how():
    header = REQUIREMENTS.read_text().split("\n\n")[0]
    assert "torch==2.13.0" in header and "pip freeze" in header


def test_ci_installs_the_requirements_between_torch_and_the_package():
    lines = [line.strip() for line in (REPOSITORY / ".ci" / "run").read_text().splitlines()]
    torch = lines.index("pip install -q torch==2.13.0")
    requirements = lines.index("pip install -q -r requirements.txt")
    package = lines.index("pip install -q -e '.[test]'")
    assert torch < requirements < package


# ---- Apptainer


def test_singularity_recipe_parses():
    from spython.main.parse.parsers import SingularityParser

    path = REPOSITORY / "Singularity.def"
    header = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert re.fullmatch(r"Bootstrap:\s*docker", header[0]), header[0]
    recipe = SingularityParser(str(path)).recipe["spython-base"]
    assert recipe.fromHeader == f"bids_harmony/bids_harmony:{bids_harmony.__version__}"
    assert recipe.cmd.split()[:2] == ["exec", "bids_harmony"] and '"$@"' in recipe.cmd
    environment = dict(item.split("=", 1) for item in recipe.environ)
    assert environment["NIPYPE_NO_ET"] == "1" and "TEMPLATEFLOW_HOME" in environment
    assert f"org.opencontainers.image.version {bids_harmony.__version__}" in recipe.labels
    assert "%help" in path.read_text()


# ---- SLURM


SCRIPTS = sorted(path.name for path in SLURM.iterdir() if path.suffix in (".sh", ".sbatch"))


def test_slurm_scripts_are_there():
    assert set(SCRIPTS) == {"participant_array.sbatch", "group.sbatch", "submit.sh"}


@pytest.mark.parametrize("script", SCRIPTS)
def test_slurm_script_passes_shellcheck(script):
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not on PATH (Debian package shellcheck)")
    text = (SLURM / script).read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    result = subprocess.run([shellcheck, "--shell=bash", str(SLURM / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def _stand_ins(tmp_path: Path) -> dict[str, str]:
    """``sbatch`` and ``apptainer`` that write down their arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\necho "sbatch $*" >> {log}\necho "4242;cluster"\n')
    (bin_dir / "apptainer").write_text(
        f'#!/bin/sh\necho "apptainer TF=$APPTAINERENV_TEMPLATEFLOW_HOME $*" >> {log}\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    bids = tmp_path / "bids"
    bids.mkdir()
    (bids / "participants.tsv").write_text("participant_id\tage\nsub-01\t30\nsub-02\t41\n\n")
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "BIDS_DIR": str(bids), "HOME": str(tmp_path),
            "SIF": str(tmp_path / "bids_harmony.sif"), "SCRATCH_DIR": str(tmp_path / "scratch")}


def test_array_task_runs_its_participant(tmp_path):
    environment = _stand_ins(tmp_path)
    environment.update(SLURM_ARRAY_TASK_ID="2", SLURM_ARRAY_JOB_ID="7", SLURM_CPUS_PER_TASK="6",
                       SLURM_MEM_PER_NODE="16384", BIDS_HARMONY_ARGS="--skip-qc --strict")
    result = subprocess.run(["bash", str(SLURM / "participant_array.sbatch")], env=environment,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    (call,) = (tmp_path / "calls.log").read_text().splitlines()
    words = call.split()
    assert words[:4] == ["apptainer", "TF=/opt/templateflow", "run", "--nv"] and "--cleanenv" in words
    assert f"{environment['BIDS_DIR']}:/data:ro" in words
    work = tmp_path / "scratch" / "bids_harmony_7_2"
    assert f"{work}:/work" in words and not work.exists()  # on scratch, removed afterwards
    assert words[words.index(environment["SIF"]) + 1:][:3] == ["/data", "/out", "participant"]
    assert words[words.index("--participant-label") + 1] == "sub-02"
    assert words[words.index("--nprocs") + 1] == "6" and words[words.index("--mem-gb") + 1] == "16"
    assert words[-2:] == ["--skip-qc", "--strict"]


def test_array_task_past_the_list_fails(tmp_path):
    environment = _stand_ins(tmp_path)
    environment.update(SLURM_ARRAY_TASK_ID="3")
    result = subprocess.run(["bash", str(SLURM / "participant_array.sbatch")], env=environment,
                            capture_output=True, text=True)
    assert result.returncode == 64 and "no such participant" in result.stderr
    assert not (tmp_path / "calls.log").exists()


def test_submit_queues_the_group_after_the_array(tmp_path):
    environment = _stand_ins(tmp_path)
    result = subprocess.run(["bash", str(SLURM / "submit.sh")], env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    array, group = (tmp_path / "calls.log").read_text().splitlines()
    assert "--parsable" in array.split() and "--array=1-2%10" in array.split()
    assert array.endswith("participant_array.sbatch")
    assert "--dependency=afterany:4242" in group.split() and group.endswith("group.sbatch")


# ---- Nipype's SLURMGraph plugin


def test_slurmgraph_plugin_file_reaches_nipype_unchanged():
    from nipype.pipeline.plugins import SLURMGraphPlugin

    from bids_harmony.cli.participant import plugin_settings

    path = SLURM / "slurmgraph_plugin.yml"
    loaded = yaml.safe_load(path.read_text())
    assert loaded["plugin"] == "SLURMGraph"
    assert "--cpus-per-task" in loaded["plugin_args"]["sbatch_args"]
    settings, harmonize_plugin_args = plugin_settings(path)
    assert settings == {"plugin": "SLURMGraph", "plugin_args": loaded["plugin_args"]}
    assert harmonize_plugin_args == {"sbatch_args": "--gres=gpu:1", "overwrite": False}
    plugin = SLURMGraphPlugin(plugin_args=settings["plugin_args"])
    assert plugin._sbatch_args == loaded["plugin_args"]["sbatch_args"]
    assert plugin._template.startswith("#!/usr/bin/env bash") and plugin._dont_resubmit_completed_jobs


def test_slurmgraph_gives_the_harmonization_alone_a_gpu(coarse_dataset, tmp_path):
    """The participant level under Nipype's real SLURMGraph plugin with the shipped plugin file,
    against a stand-in ``sbatch`` that runs each job script at once (in the order SLURMGraph
    submits them, which its dependencies follow)."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "sbatch.log"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        'for script; do :; done\n'  # the job script is the last argument
        f'bash "$script" > "$script.o" 2> "$script.e" || echo "FAILED $script" >> {calls}\n'
        'echo "Submitted batch job $$"\n')
    (bin_dir / "sbatch").chmod(0o755)
    output_dir, work_dir = tmp_path / "out", tmp_path / "work"
    command = [sys.executable, "-m", "bids_harmony.cli.run", str(coarse_dataset), str(output_dir),
               "participant", "--participant-label", "02", "--model", "demo", "-w", str(work_dir),
               "--skip-qc", "--skip-bids-validation", "--method", "camera-ready", "--iterations", "1",
               "--omp-nthreads", "1"]
    environment = {**os.environ, "NIPYPE_NO_ET": "1", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    submitted = subprocess.run([*command, "--use-plugin", str(SLURM / "slurmgraph_plugin.yml")],
                               capture_output=True, text=True, env=environment, timeout=900)
    assert submitted.returncode == 0, submitted.stderr[-3000:]
    assert "submitted as SLURMGraph jobs" in submitted.stderr and "--reports-only" in submitted.stderr
    jobs = calls.read_text().splitlines()
    assert not [line for line in jobs if line.startswith("FAILED")], calls.read_text()
    names = [line.split(" -J ")[1].split()[0] for line in jobs]
    assert len(names) > 3 and any(name.endswith("_prepare") for name in names)
    for line, name in zip(jobs, names):
        assert "--cpus-per-task=4" in line
        assert ("--gres=gpu:1" in line) == name.endswith("_harmonize"), line
    assert sum(name.endswith("_harmonize") for name in names) == 1
    assert any("--dependency=afterok:" in line for line in jobs if " -J " in line and "_harmonize" in line)

    harmonized = output_dir / "sub-02" / "anat" / "sub-02_desc-harmonized_T1w.nii.gz"
    sidecar = json.loads(harmonized.with_name("sub-02_desc-harmonized_T1w.json").read_text())
    assert sidecar["Device"] == "cpu"  # decided in the job, from --device auto
    assert sidecar["HarmonizationMethod"] == {"Name": "camera-ready", "Changed": {"iterations": 1},
                                              "AdditionsToThePaper": []}
    assert sidecar["HarmonizationParameters"]["smooth_across_slices"] is False
    (configuration,) = (output_dir / "logs").glob("config-*.json")
    assert json.loads(configuration.read_text())["device"] == "auto"
    assert not (output_dir / "sub-02.html").exists()
    reports = subprocess.run([*command[:6], "--reports-only"], capture_output=True, text=True, env=environment)
    assert reports.returncode == 0, reports.stderr[-2000:]
    assert (output_dir / "sub-02.html").is_file()
