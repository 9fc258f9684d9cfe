"""The group level: the participant level's QC across subjects and scanners, in one table and one report."""
from __future__ import annotations

import sys

from ..errors import InputError
from .participant import check_folders


def run_group(args) -> int:
    """Write ``group_T1w.tsv`` and ``group_report.html`` in OUTPUT_DIR; say so in one line."""
    from ..reports.group import write_group_outputs

    # the work dir is the output folder's check again: the group level writes nowhere else
    _, output_dir, _ = check_folders(args.bids_dir, args.output_dir, args.output_dir)
    if not output_dir.is_dir():
        raise InputError(f"{output_dir}: no such directory; run the participant level first")
    outcome = write_group_outputs(output_dir, args.participant_label, args.session_label)
    counts = outcome.data.counts()
    print(f"bids_harmony group: {counts['measured']} T1w run(s) of {counts['scanners']} scanner(s) with QC, "
          f"{counts['flagged']} flagged, {counts['failed']} failed or missing, {counts['no_qc']} without QC; "
          f"report {outcome.report}, table {outcome.table}", file=sys.stderr)
    return 0
