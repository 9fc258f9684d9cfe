"""The participant level: check the inputs, select the T1w runs, build and run the workflow,
then say what succeeded and what failed (one line each)."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .. import errors
from ..__about__ import __version__
from ..atomic import atomic_write
from ..devices import device_name, gpu_count
from ..errors import BidsError, InputError, ModelError
from ..settings import HarmonizationParams
from .parser import DEMO_MODEL

LOG = logging.getLogger("bids_harmony")


@dataclass
class Selection:
    """The T1w runs of each selected subject, and the subjects that have none."""

    runs: dict[str, list[str]] = field(default_factory=dict)
    without_t1w: list[str] = field(default_factory=list)


def inside_dataset(path: Path, bids_dir: Path) -> bool:
    """Would writing to ``path`` write into the dataset (outside its ``derivatives/``)? Compared
    with symbolic links resolved, so a link cannot smuggle a path in."""
    path, bids_dir = path.resolve(), bids_dir.resolve()
    return path.is_relative_to(bids_dir) and not path.is_relative_to(bids_dir / "derivatives")


def check_folders(bids_dir: Path, output_dir: Path, work_dir: Path) -> tuple[Path, Path, Path]:
    """Absolute folders; refuses an output folder or work dir that would write into the dataset."""
    bids_dir, output_dir, work_dir = (Path(os.path.abspath(path)) for path in (bids_dir, output_dir, work_dir))
    if not bids_dir.is_dir():
        raise InputError(f"{bids_dir}: no such directory")
    if output_dir.resolve() == bids_dir.resolve():
        raise InputError(f"{output_dir}: the output folder cannot be the BIDS dataset itself "
                         f"(use e.g. {bids_dir / 'derivatives' / 'bids_harmony'})")
    if inside_dataset(output_dir, bids_dir):
        raise InputError(f"{output_dir}: the output folder is inside the BIDS dataset; only "
                         f"{bids_dir / 'derivatives'} may hold outputs")
    if inside_dataset(work_dir, bids_dir):
        raise InputError(f"{work_dir}: the work dir is inside the BIDS dataset; put it elsewhere")
    return bids_dir, output_dir, work_dir


def check_writable(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and check a file can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise InputError(f"{folder}: the {what} cannot be written ({error.strerror or error})") from None


def resolve_model(choice: str | None) -> Path:
    """``demo`` is the bundled model; no model at all is an error that says what to do."""
    if choice is None:
        raise ModelError("no model given: train one on the target scanner's T1w with bids_harmony-train "
                         f"and pass --model FILE, or try the pipeline with --model {DEMO_MODEL}")
    if choice == DEMO_MODEL:
        from ..model import bundled_model_path

        return bundled_model_path()
    return Path(os.path.abspath(choice))


def select_runs(layout, participant_labels, session_labels, bids_filter_file) -> Selection:
    """One entry per T1w run of each selected subject; subjects without one are listed apart."""
    from ..bids.selection import clean_labels, read_bids_filters, select_t1w

    images = select_t1w(layout, participant_labels, session_labels, read_bids_filters(bids_filter_file))
    subjects = clean_labels(participant_labels, "sub") or sorted(layout.get_subjects())
    selection = Selection()
    for subject in subjects:
        runs = [str(image.path) for image in images if image.subject == subject]
        if runs:
            selection.runs[subject] = runs
        else:
            selection.without_t1w.append(subject)
    return selection


def describe_model(model) -> str:
    """The model's target (scanner filter and scanners) and preprocessing, in a few words."""
    target = model.target or {}
    scanners = "; ".join(
        " ".join(str(scanner.get(key)) for key in ("Manufacturer", "ManufacturersModelName", "StationName")
                 if scanner.get(key)) for scanner in target.get("scanners") or []) or "unknown scanner"
    config = model.preprocessing
    return (f"target {scanners} (filters {target.get('metadata_filters') or {}}); grid "
            f"{config.slice_shape[0]}x{config.slice_shape[1]}x{config.n_positions} at {config.resolution_mm} mm, "
            f"placement {config.placement}, brain extraction {'on' if config.brain_extraction else 'off'}")


def earlier_outputs_differ(output_dir: Path, model_sha256: str, params: HarmonizationParams) -> list[str]:
    """Harmonized images already in ``output_dir`` made with another model or other settings."""
    differing = []
    for sidecar in sorted(output_dir.glob("sub-*/**/anat/*_desc-harmonized_T1w.json")):
        try:
            content = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            continue
        if (content.get("HarmonizationModel", {}).get("SHA256") != model_sha256
                or content.get("HarmonizationParameters") != params.to_dict()):
            differing.append(str(sidecar.relative_to(output_dir)))
    return differing


_USER_ERRORS = {name for name, value in vars(errors).items()
                if isinstance(value, type) and issubclass(value, errors.BidsHarmonyError)}
_ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?(\w+): (.+)$")


def crash_problem(crash_file: Path) -> str:
    """The one line a user needs from a crash file: our error's message, or the bug's last line."""
    lines = crash_file.read_text(errors="replace").splitlines()
    last = ""
    for line in lines:
        match = _ERROR_LINE.match(line.strip())
        if match and match.group(1) in _USER_ERRORS:
            return match.group(2)
        if match and match.group(1).endswith(("Error", "Exception")):
            last = f"{match.group(1)}: {match.group(2)}"
    return f"unexpected error ({last or 'see the crash file'}); please report it with the crash file"


def crash_run(crash_file: Path, runs: list[str]) -> str | None:
    """Which of a subject's T1w runs a crash file belongs to (its node's workflow names it)."""
    from ..workflows.base import run_label

    text = crash_file.read_text(errors="replace")
    for run in runs:
        if re.search(rf"(harmonize|derivatives|qc|qc_derivatives)_{re.escape(run_label(run))}_wf", text):
            return run
    return None


_QC_NODE = re.compile(r"\.qc(?:_derivatives)?_\w+_wf\.")


def in_qc(crash_file: Path) -> bool:
    """Did the crash happen in a QC node (which starts from the input, as harmonization does)?"""
    return _QC_NODE.search(crash_file.read_text(errors="replace")) is not None


_NODE_NAME = re.compile(r"bids_harmony_wf\.sub_(?P<subject>[0-9A-Za-z]+)_wf\."
                        r"(?:harmonize|qc_derivatives|derivatives|qc)_(?P<run>\w+?)_wf\.(?P<node>\w+)")


def _progress(fullname: str, event: str) -> str | None:
    match = _NODE_NAME.search(fullname)
    if match is None:
        return None
    return f"sub-{match['subject']} {match['run']}: {match['node']} {event}"


class _NipypeMessages(logging.Filter):
    """Nipype's terminal messages as one line per node start and finish, with the subject and
    run; no tracebacks (the crash files have them, and the summary names the crash files)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith("Saving crash info") or "failed to run on host" in message:
            return False
        if record.levelno >= logging.WARNING:
            return True
        line = None
        if message.startswith("[Node] Setting-up"):
            line = _progress(record.getMessage(), "started")
        elif message.startswith("[Job %d] %s (%s).") and record.args and record.args[1] == "Completed":
            line = _progress(str(record.args[2]), "finished")
        if line is None:
            return False
        record.msg, record.args = line, ()
        return True


def configure_logging(verbose: int) -> None:
    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.DEBUG if verbose > 1 else logging.INFO, stream=sys.stderr, force=True)
    from nipype import logging as nipype_logging

    del nipype_logging  # imported for its handlers, which it puts on the "nipype" logger
    for handler in list(logging.getLogger("nipype").handlers):  # one format for every line: ours
        logging.getLogger("nipype").removeHandler(handler)
    logging.getLogger("bidsschematools").setLevel(logging.WARNING)
    for name in ("nipype.workflow", "nipype.interface", "nipype.utils"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
        if verbose == 0:
            logger.addFilter(_NipypeMessages())


#: Nipype plugins that run every node on this machine: the device is chosen here, up front
LOCAL_PLUGINS = ("MultiProc", "LegacyMultiProc", "Linear")
#: what a ``--use-plugin`` file may hold
PLUGIN_FILE_KEYS = ("plugin", "plugin_args", "harmonize_plugin_args")


def plugin_settings(plugin_file: Path | None) -> tuple[dict, dict]:
    """Nipype's plugin and its arguments (``--use-plugin``'s, else MultiProc), and the
    harmonization node's own plugin arguments (the file's ``harmonize_plugin_args``, e.g. the
    sbatch arguments of its GPU: Nipype's SLURM plugins know nothing of GPUs)."""
    import yaml

    if plugin_file is None:
        return {"plugin": "MultiProc", "plugin_args": {}}, {}
    try:
        loaded = yaml.safe_load(Path(plugin_file).read_text())
    except (OSError, yaml.YAMLError) as error:
        problem = " ".join(str(error).split())  # YAML's messages span lines
        raise InputError(f"{plugin_file}: not a readable plugin settings file ({problem})") from None
    if not isinstance(loaded, dict) or "plugin" not in loaded:
        raise InputError(f"{plugin_file}: a plugin settings file has 'plugin:' and 'plugin_args:'")
    unknown = sorted(set(loaded) - set(PLUGIN_FILE_KEYS))
    if unknown:
        raise InputError(f"{plugin_file}: unknown key(s) {', '.join(unknown)} "
                         f"(known: {', '.join(PLUGIN_FILE_KEYS)})")
    if _plugin_class(loaded["plugin"]) is None:
        raise InputError(f"{plugin_file}: Nipype has no plugin {loaded['plugin']!r}")
    for key in PLUGIN_FILE_KEYS[1:]:
        if not isinstance(loaded.get(key) or {}, dict):
            raise InputError(f"{plugin_file}: '{key}:' must be a mapping (name: value lines)")
    return ({"plugin": loaded["plugin"], "plugin_args": dict(loaded.get("plugin_args") or {})},
            dict(loaded.get("harmonize_plugin_args") or {}))


def limit_multiproc(plugin_args: dict, args, device: str) -> None:
    """MultiProc's limits from the command line, where the plugin file does not set them."""
    plugin_args.setdefault("n_procs", args.nprocs)
    if args.mem_gb:
        plugin_args.setdefault("memory_gb", args.mem_gb)
    plugin_args.setdefault("n_gpu_procs", gpu_count() if device == "cuda" else 0)
    plugin_args.setdefault("raise_insufficient", True)


def _plugin_class(plugin: object) -> type | None:
    """The class ``workflow.run(plugin=...)`` would use, or None."""
    from nipype.pipeline import plugins

    plugin_class = getattr(plugins, f"{plugin}Plugin", None) if isinstance(plugin, str) else None
    return plugin_class if isinstance(plugin_class, type) else None


def submits_only(plugin: str) -> bool:
    """Does the plugin submit the whole graph to a scheduler and return before it runs
    (SLURMGraph, SGEGraph, CondorDAGMan)?"""
    from nipype.pipeline.plugins.base import GraphPluginBase

    return issubclass(_plugin_class(plugin), GraphPluginBase)


def save_configuration(output_dir: Path, run_uuid: str, content: dict) -> Path:
    path = output_dir / "logs" / f"config-{run_uuid}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as stream:
        stream.write(json.dumps(content, indent=2, default=str) + "\n")
    return path


def run_participant(args, params: HarmonizationParams) -> int:
    """The participant level; returns the exit status (non-zero when any selected run failed)."""
    from ..bids.derivatives import write_output_description
    from ..bids.selection import open_layout
    from ..bids.validation import validate_bids
    from ..model import load_model

    bids_dir, output_dir, work_dir = check_folders(args.bids_dir, args.output_dir, args.work_dir)
    model_file = resolve_model(args.model)
    model = load_model(model_file)  # on the CPU: CUDA stays out of this (forking) process
    settings, harmonize_plugin_args = plugin_settings(args.use_plugin)
    # with a plugin that sends nodes to other machines, the one that runs the harmonization decides
    device = device_name(args.device) if settings["plugin"] in LOCAL_PLUGINS else args.device
    if settings["plugin"] == "MultiProc":
        limit_multiproc(settings["plugin_args"], args, device)
    layout = open_layout(bids_dir, args.bids_database_dir)
    if not args.skip_bids_validation:
        warnings = validate_bids(bids_dir)
        LOG.info("BIDS validator: %s valid (%d warning(s))", bids_dir, len(warnings))
    selection = select_runs(layout, args.participant_label, args.session_label, args.bids_filter_file)
    if not selection.runs and not selection.without_t1w:
        raise BidsError(f"{bids_dir}: no subject matches the selection")
    check_writable(output_dir, "output folder")
    check_writable(work_dir, "work dir")
    if args.bids_copy:
        from ..bids.copy import check_copy_target

        if submits_only(settings["plugin"]):
            raise InputError(f"--bids-copy {args.bids_copy}: not with {settings['plugin']}, which returns before "
                             "the harmonization has run (run it with MultiProc, reusing the work dir)")
        bids_copy = Path(os.path.abspath(args.bids_copy))
        check_copy_target(bids_copy, bids_dir, output_dir)
        check_writable(bids_copy.parent, "BIDS copy's parent folder")
    if args.clean_workdir:
        shutil.rmtree(work_dir, ignore_errors=True)
        check_writable(work_dir, "work dir")

    omp_nthreads = args.omp_nthreads or max(1, min(args.nprocs - 1, 8))
    run_count = sum(len(runs) for runs in selection.runs.values())
    LOG.info("bids_harmony %s: %d subject(s), %d T1w run(s): %s", __version__, len(selection.runs), run_count,
             ", ".join(f"sub-{label} ({len(runs)})" for label, runs in selection.runs.items()) or "none")
    LOG.info("model %s (sha256 %s...): %s", model_file, model.sha256[:12], describe_model(model))
    if settings["plugin"] in LOCAL_PLUGINS:
        LOG.info("device %s, %d process(es), %d thread(s) each", device, args.nprocs, omp_nthreads)
    else:
        LOG.info("Nipype plugin %s; device %s, decided where the harmonization runs%s; %d thread(s) a node",
                 settings["plugin"], args.device,
                 f" (its own plugin arguments: {harmonize_plugin_args})" if harmonize_plugin_args else "",
                 omp_nthreads)
    for sidecar in earlier_outputs_differ(output_dir, model.sha256, params)[:1]:
        LOG.warning("%s already holds outputs made with another model or other settings (e.g. %s); "
                    "they will be replaced where the same runs are processed", output_dir, sidecar)

    started = datetime.now()
    run_uuid = f"{started:%Y%m%d-%H%M%S}_{uuid.uuid4()}"
    from nipype import config as nipype_config

    nipype_config.set("execution", "check_version", "false")
    if args.resource_monitor:
        nipype_config.enable_resource_monitor()
    from ..workflows import init_bids_harmony_wf

    workflow = init_bids_harmony_wf(
        subjects=selection.runs, bids_dir=str(bids_dir), output_dir=str(output_dir), work_dir=str(work_dir),
        run_uuid=run_uuid, model_file=str(model_file), params=params, device=device, strict=args.strict,
        omp_nthreads=omp_nthreads, harmonize_plugin_args=harmonize_plugin_args, skip_qc=args.skip_qc,
        stop_on_first_crash=args.stop_on_first_crash,
    )
    from ..qc import BIDS_LABELS

    write_output_description(output_dir, bids_dir, layout.get_dataset_description().get("Name"),
                             label_values=None if args.skip_qc else dict(BIDS_LABELS))
    from ..boilerplate import write_boilerplate

    write_boilerplate(workflow, output_dir / "logs", brain_extraction=model.preprocessing.brain_extraction)
    configuration = {
        "bids_harmony": __version__, "command": sys.argv, "run_uuid": run_uuid,
        "started": started.isoformat(timespec="seconds"),
        "bids_dir": bids_dir, "output_dir": output_dir, "work_dir": work_dir,
        "model": {"file": model_file, "sha256": model.sha256}, "model_target": describe_model(model),
        "device": device, "harmonization": params.to_dict(), "strict": args.strict, "skip_qc": args.skip_qc,
        "omp_nthreads": omp_nthreads, "plugin": settings, "harmonize_plugin_args": harmonize_plugin_args,
        "runs": selection.runs,
        "subjects_without_t1w": selection.without_t1w,
    }
    save_configuration(output_dir, run_uuid, configuration)
    if args.boilerplate_only:
        LOG.info("methods boilerplate in %s", output_dir / "logs")
        return 0
    if args.write_graph:
        drawn = shutil.which("dot") is not None  # graphviz draws it; without it, the .dot text only
        workflow.write_graph(dotfilename=str(output_dir / "logs" / "graph.dot"), graph2use="colored",
                             format="svg" if drawn else "dot", simple_form=True)
        LOG.info("workflow graph in %s%s", output_dir / "logs", "" if drawn else
                 " (graph.dot; install graphviz to get graph.svg)")
        return 0
    if args.resource_monitor:
        _add_resource_log(settings, output_dir / "logs" / f"resources-{run_uuid}.jsonl")

    user_cwd = os.getcwd()
    os.chdir(work_dir)  # Nipype's resource monitor leaves its files in the current folder
    try:
        workflow.run(**settings)
    except RuntimeError:  # Nipype's way of saying nodes failed: the crash files say which and why
        if not list(output_dir.glob(f"sub-*/log/{run_uuid}/crash-*.txt")):
            raise
        LOG.debug("the workflow stopped on failed nodes", exc_info=True)
    finally:
        os.chdir(user_cwd)
    configuration["seconds"] = round((datetime.now() - started).total_seconds(), 1)
    save_configuration(output_dir, run_uuid, configuration)
    if submits_only(settings["plugin"]):
        print(f"bids_harmony: {run_count} T1w run(s) submitted as {settings['plugin']} jobs; once they have "
              f"finished, `bids_harmony {bids_dir} {output_dir} participant --reports-only` writes the reports "
              f"(failed nodes leave crash files in {output_dir}/sub-<label>/log/{run_uuid}/)", file=sys.stderr)
        return 0
    result = outcome(selection, bids_dir, output_dir, run_uuid, started.timestamp())
    write_reports(output_dir, list(selection.runs))
    if args.bids_copy:
        from ..bids.copy import write_bids_copy

        copy = write_bids_copy(bids_dir, bids_copy, {Path(run): path for run, path in result.harmonized.items()},
                               [Path(run) for _, _, run in result.failures if run], model.sha256)
        LOG.info("BIDS copy with the harmonized T1w in %s", copy)
    return report(result, output_dir)


def write_reports(output_dir: Path, subjects: list[str]) -> list[Path]:
    """``sub-<label>.html`` of each subject; a report that cannot be built is logged, and the
    harmonized outputs stand."""
    from ..reports.subject import generate_subject_report

    written = []
    for subject in subjects:
        try:
            written.append(generate_subject_report(output_dir, subject))
        except Exception:  # a report is never worth losing a run's outputs
            LOG.exception("sub-%s: the HTML report could not be written", subject)
    if written:
        LOG.info("report(s): %s", ", ".join(str(path) for path in written))
    return written


def run_reports_only(args) -> int:
    """``--reports-only``: rebuild the subjects' reports from what OUTPUT_DIR holds."""
    from ..bids.selection import clean_labels
    from ..reports.subject import report_subjects

    output_dir = Path(os.path.abspath(args.output_dir))
    available = report_subjects(output_dir)
    if not available:
        raise InputError(f"{output_dir}: no participant-level outputs (sub-*/) to report on; "
                         "run the participant level first")
    subjects = clean_labels(args.participant_label, "sub") or available
    missing = sorted(set(subjects) - set(available))
    if missing:
        raise InputError(f"{output_dir}: no outputs of {', '.join(f'sub-{label}' for label in missing)}")
    written = write_reports(output_dir, subjects)
    return 0 if len(written) == len(subjects) else 1


def _add_resource_log(settings: dict, path: Path) -> None:
    """Nipype's per-node status callback (start, finish, memory, threads) into ``path``."""
    from nipype.utils.profiler import log_nodes_cb

    logger = logging.getLogger("callback")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = logging.FileHandler(path)
    logger.addHandler(handler)
    settings["plugin_args"]["status_callback"] = log_nodes_cb


@dataclass
class Outcome:
    """What became of each selected run: the harmonized ones (source -> output) and the failures
    (where, problem, and the source when there is one)."""

    harmonized: dict[str, Path] = field(default_factory=dict)
    failures: list[tuple[str, str, str | None]] = field(default_factory=list)


def outcome(selection: Selection, bids_dir: Path, output_dir: Path, run_uuid: str, started: float) -> Outcome:
    """A run succeeded when it left no crash file and its harmonized T1w was published by this run."""
    from ..bids.derivatives import harmonized_t1w_path

    result = Outcome(failures=[(f"sub-{subject}", "no T1w image (anat/*_T1w.nii[.gz]) matches the selection", None)
                               for subject in selection.without_t1w])
    for subject, runs in selection.runs.items():
        crashed_runs: dict[str | None, Path] = {}
        crashes = sorted((output_dir / f"sub-{subject}" / "log" / run_uuid).glob("crash-*.txt"))
        for crash in sorted(crashes, key=in_qc):  # harmonization's crash says more than its QC's
            crashed_runs.setdefault(crash_run(crash, runs), crash)
        for run in runs:
            crash = crashed_runs.get(run) or crashed_runs.get(None)
            output = harmonized_t1w_path(run, bids_dir, output_dir)
            where = f"sub-{subject}: {run}"
            if crash is not None:
                problem = crash_problem(crash).removeprefix(f"{run}: ")  # it names the file already
                result.failures.append((where, f"{problem} (crash file: {crash})", run))
            elif not output.is_file() or output.stat().st_mtime < started:
                result.failures.append((where, "not finished (the run stopped before it)", run))
            else:
                result.harmonized[run] = output
    return result


def report(result: Outcome, output_dir: Path) -> int:
    """One line per failed run (subject, file, problem, crash file), then the totals."""
    for where, problem, _ in result.failures:
        print(f"FAILED {where}: {problem}", file=sys.stderr)
    print(f"bids_harmony: {len(result.harmonized)} T1w run(s) harmonized, {len(result.failures)} failed; "
          f"outputs in {output_dir}, logs in {output_dir / 'logs'}", file=sys.stderr)
    return 1 if result.failures else 0
