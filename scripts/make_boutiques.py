#!/usr/bin/env python
"""Write ``boutiques.json``, the Boutiques descriptor of ``bids_harmony``, from its argparse parser.

    python scripts/make_boutiques.py            # (re)write boutiques.json at the repository root
    python scripts/make_boutiques.py --check    # exit 1 when boutiques.json is out of date

Every option of :func:`bids_harmony.cli.parser.build_parser` becomes an input (the primary flag:
the first long option string; the others are aliases); ``tests/test_boutiques.py`` fails when the
committed file differs from what this script writes, so a new option cannot be forgotten.
The descriptor has the BIDS-App form ``bosh validate --bids`` demands (docs/boutiques.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NIPYPE_NO_ET", "1")

from bids_harmony import errors  # noqa: E402
from bids_harmony.__about__ import __version__  # noqa: E402
from bids_harmony.cli import parser as cli_parser  # noqa: E402

DESCRIPTOR = ROOT / "boutiques.json"
REGENERATE = "python scripts/make_boutiques.py"
#: The Dockerfile's image (its tag is the package version).
IMAGE = "bids_harmony/bids_harmony"
AUTHOR = "The bids_harmony developers"
#: The method's reference implementation (the project has no public address of its own yet).
URL = "https://github.com/SNU-LIST/BlindHarmony"

#: Measured on 2 CPU cores with the demo model (one simulated 1 mm T1w): about 45 s per T1w with
#: ``--skip-qc``, 105 s with QC (the default). A participant-level task is one subject.
CPU_CORES = 2
RAM_GB = 6  # the largest node peaked at 2.5 GB (resource monitor, QC on); two run at once
SECONDS_PER_T1W = {"skip-qc": 45, "qc": 105}

#: The positionals, in the order of the BIDS-App command line, and their value-keys.
POSITIONALS = {"bids_dir": "[BIDS_DIR]", "output_dir": "[OUTPUT_DIR]", "analysis_level": "[ANALYSIS_LEVEL]"}
#: Options placed right after the positionals (``bosh validate --bids`` wants them there).
LEADING = ("participant_label", "session_label")
#: Defaults that depend on where the parser is built: described, not given as default-value.
RUNTIME_DEFAULTS = {"work_dir": "work/ in the current folder", "nprocs": "the machine's CPU count"}

#: How each ``type=`` of the parser is described: Boutiques type and number constraints.
NUMBER_TYPES: dict[Any, dict[str, Any]] = {
    int: {"integer": True},
    float: {},
    cli_parser._positive_int: {"integer": True, "minimum": 1},
    cli_parser._positive_float: {"minimum": 0, "exclusive-minimum": True},
}
#: ``type=Path`` options whose metavar says they are read (must exist): File; others are folders
#: the run writes (String, so that launching does not demand that they exist).
READ_METAVARS = ("FILE",)


class DescriptorError(RuntimeError):
    """The parser has an option this script does not know how to describe."""


def primary_flag(action: argparse.Action) -> str:
    """The first long option string (``--work-dir`` of ``-w/--work-dir/--work_dir``)."""
    return next((flag for flag in action.option_strings if flag.startswith("--")), action.option_strings[0])


ACRONYMS = {"bids": "BIDS", "qc": "QC", "omp": "OMP", "gb": "GB"}


def _name(dest: str) -> str:
    words = [ACRONYMS.get(word, word) for word in dest.split("_")]
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]])


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    text = action.help or ""
    if "%(" in text:
        text = text % {**vars(action), "prog": parser.prog}
    return text


def _runtime_dependent(parser: argparse.ArgumentParser) -> set[str]:
    """The dests whose defaults change with the machine or the current folder: the parser built
    again with another CPU count and working directory gives them other defaults."""
    with mock.patch("os.cpu_count", return_value=997), mock.patch("os.getcwd", return_value="/elsewhere"):
        other = {action.dest: action.default for action in cli_parser.build_parser()._actions}
    return {action.dest for action in parser._actions if other.get(action.dest) != action.default}


def _skipped(action: argparse.Action) -> bool:
    return isinstance(action, (argparse._HelpAction, argparse._VersionAction))


def _value_input(parser: argparse.ArgumentParser, action: argparse.Action, runtime: set[str]) -> dict[str, Any]:
    flag = primary_flag(action)
    entry: dict[str, Any] = {"id": action.dest, "name": _name(action.dest), "type": "String",
                             "description": _help(parser, action), "value-key": f"[{action.dest.upper()}]",
                             "command-line-flag": flag, "optional": not action.required}
    kind = action.type
    if action.choices is not None:
        entry["value-choices"] = list(action.choices)
    elif kind is Path:
        entry["type"] = "File" if action.metavar in READ_METAVARS else "String"
    elif kind in NUMBER_TYPES:
        entry["type"] = "Number"
        entry.update(NUMBER_TYPES[kind])
    elif kind not in (None, str):
        raise DescriptorError(f"{flag}: type {kind!r} is not described; add it to NUMBER_TYPES in "
                              f"scripts/make_boutiques.py")
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        entry["list"] = True
        if action.nargs == "+":
            entry["min-list-entries"] = 1
        elif isinstance(action.nargs, int):
            entry["min-list-entries"] = entry["max-list-entries"] = action.nargs
    elif action.nargs is not None:
        raise DescriptorError(f"{flag}: nargs={action.nargs!r} is not described")
    if action.dest in runtime:
        entry["description"] += f" (default: {RUNTIME_DEFAULTS.get(action.dest, 'set at run time')})"
    elif action.default not in (None, argparse.SUPPRESS):
        default = action.default
        entry["default-value"] = str(default) if isinstance(default, Path) else default
    return entry


def _flag_input(dest: str, flag: str, description: str) -> dict[str, Any]:
    return {"id": dest, "name": _name(dest), "type": "Flag", "description": description,
            "value-key": f"[{dest.upper()}]", "command-line-flag": flag, "optional": True}


def option_inputs(parser: argparse.ArgumentParser) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The options' inputs (parser order) and the mutually exclusive groups among them."""
    runtime = _runtime_dependent(parser)
    inputs: list[dict[str, Any]] = []
    groups: list[dict[str, Any]] = []
    for action in parser._actions:
        if _skipped(action) or not action.option_strings:
            continue
        text = _help(parser, action)
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            inputs.append(_flag_input(action.dest, primary_flag(action), text))
        elif isinstance(action, argparse.BooleanOptionalAction):
            on, off = action.option_strings[0], action.option_strings[1]
            inputs.append(_flag_input(action.dest, on, text))
            inputs.append(_flag_input(f"no_{action.dest}", off, f"the opposite of {on}: {text}"))
            groups.append({"id": f"{action.dest}_or_not", "name": f"{on} or {off}",
                           "description": f"at most one of {on} and {off}; neither: the default",
                           "members": [action.dest, f"no_{action.dest}"], "mutually-exclusive": True})
        elif isinstance(action, argparse._CountAction):
            # -v, -vv: a repeated flag, given as the repeated short option itself
            short = min(action.option_strings, key=len)
            inputs.append({"id": action.dest, "name": _name(action.dest), "type": "String",
                           "description": f"{text} ({short} or {short}{short[1:]}, as typed)",
                           "value-key": f"[{action.dest.upper()}]", "optional": True,
                           "value-choices": [short, short + short[1:]]})
        elif isinstance(action, argparse._StoreAction):
            inputs.append(_value_input(parser, action, runtime))
        else:
            raise DescriptorError(f"{primary_flag(action)}: action {type(action).__name__} is not described")
    for group in parser._mutually_exclusive_groups:
        members = [action.dest for action in group._group_actions]
        groups.append({"id": "_or_".join(members), "name": " or ".join(primary_flag(a) for a in group._group_actions),
                       "description": "at most one of these" if not group.required else "exactly one of these",
                       "members": members, "mutually-exclusive": True, "one-is-required": group.required})
    return inputs, groups


def positional_inputs(parser: argparse.ArgumentParser) -> list[dict[str, Any]]:
    actions = {action.dest: action for action in parser._actions if not action.option_strings}
    if list(actions) != list(POSITIONALS):
        raise DescriptorError(f"positionals {list(actions)}, expected {list(POSITIONALS)}: update "
                              f"POSITIONALS in scripts/make_boutiques.py")
    output_help = _help(parser, actions["output_dir"])
    return [
        {"id": "bids_dir", "name": "BIDS directory", "type": "File", "description": _help(parser, actions["bids_dir"]),
         "value-key": "[BIDS_DIR]", "optional": False},
        {"id": "output_dir_name", "name": "Output directory name", "type": "String",
         "description": f"participant level: {output_help}", "value-key": "[OUTPUT_DIR]", "optional": True},
        {"id": "participant_level_analysis_dir", "name": "Participant-level output directory", "type": "File",
         "description": "group level: the OUTPUT_DIR the participant level wrote", "value-key": "[OUTPUT_DIR]",
         "optional": True},
        {"id": "analysis_level", "name": "Analysis level", "type": "String",
         "description": _help(parser, actions["analysis_level"]), "value-key": "[ANALYSIS_LEVEL]",
         "optional": False, "value-choices": list(actions["analysis_level"].choices)},
    ]


def error_codes() -> list[dict[str, Any]]:
    """The exit codes of :mod:`bids_harmony.errors` (the first class of each code describes it)."""
    described: dict[int, str] = {}
    pending = [errors.BidsHarmonyError]
    while pending:
        kind = pending.pop(0)
        described.setdefault(kind.exit_code, (kind.__doc__ or kind.__name__).strip().splitlines()[0])
        pending.extend(kind.__subclasses__())
    described[2] += " (also: a command-line usage error)"
    described[130] = "interrupted"
    return [{"code": code, "description": text} for code, text in sorted(described.items())]


def build_descriptor() -> dict[str, Any]:
    parser = cli_parser.build_parser()
    options, groups = option_inputs(parser)
    positionals = positional_inputs(parser)
    by_id = {entry["id"]: entry for entry in options}
    ordered = [by_id[dest] for dest in LEADING] + [entry for entry in options if entry["id"] not in LEADING]
    command = " ".join(["mkdir -p [OUTPUT_DIR];", parser.prog, "[BIDS_DIR] [OUTPUT_DIR] [ANALYSIS_LEVEL]",
                        *(entry["value-key"] for entry in ordered)])
    skip_qc, qc = SECONDS_PER_T1W["skip-qc"], SECONDS_PER_T1W["qc"]
    description = (f"{parser.description} Resources, measured on {CPU_CORES} CPU cores with the demo model: "
                   f"about {skip_qc} s per T1w with --skip-qc, {qc} s with QC (the default); a GPU "
                   f"(--device auto or cuda; the container asks Docker for all GPUs) speeds up the "
                   f"harmonization. The walltime estimate is for one subject with one T1w and QC.")
    return {
        "name": parser.prog,
        "tool-version": __version__,
        "schema-version": "0.5",
        "description": description,
        "author": AUTHOR,
        "url": URL,
        "command-line": command,
        "container-image": {"type": "docker", "image": f"{IMAGE}:{__version__}", "container-opts": ["--gpus", "all"]},
        "inputs": positionals + ordered,
        "output-files": [{"id": "output_dir", "name": "Output directory",
                          "description": "the BIDS Derivatives dataset (harmonized T1w, QC, reports, logs)",
                          "path-template": "[OUTPUT_DIR]", "optional": False}],
        "groups": [{"id": "output_directory", "name": "Output directory",
                    "description": "participant level: a folder name to write; group level: the participant "
                    "level's output folder", "members": ["output_dir_name", "participant_level_analysis_dir"],
                    "mutually-exclusive": True, "one-is-required": True}, *groups],
        "error-codes": error_codes(),
        "suggested-resources": {"cpu-cores": CPU_CORES, "ram": RAM_GB, "walltime-estimate": qc},
        "tags": {"domain": ["neuroinformatics", "mri", "harmonization"], "bids-app": True},
    }


def render() -> str:
    return json.dumps(build_descriptor(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--output", type=Path, default=DESCRIPTOR, help="where to write (default: %(default)s)")
    options.add_argument("--check", action="store_true", help="write nothing; exit 1 if the file is out of date")
    args = options.parse_args(argv)
    text = render()
    if args.check:
        if not args.output.is_file() or args.output.read_text() != text:
            print(f"{args.output} is out of date: run {REGENERATE}", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
