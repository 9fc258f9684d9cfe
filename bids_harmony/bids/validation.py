"""The official BIDS validator (``bids-validator-deno``), run before any work is done."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import BidsError


def validate_bids(bids_dir: str | Path, timeout: int = 600) -> list[dict]:
    """Run the schema validator on ``bids_dir``; raise on errors, return the warnings."""
    beside_python = Path(sys.executable).parent / "bids-validator-deno"  # a venv not on PATH
    executable = shutil.which("bids-validator-deno") or (str(beside_python) if beside_python.is_file() else None)
    if executable is None:
        raise BidsError("bids-validator-deno is not installed (pip install bids-validator-deno), "
                        "or skip the validation")
    try:
        result = subprocess.run([executable, str(bids_dir), "--format", "json"],
                                capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BidsError(f"{bids_dir}: the BIDS validator did not finish in {timeout} s "
                        "(check the dataset, or skip validation)") from None
    try:
        issues = json.loads(result.stdout)["issues"]["issues"]
    except (ValueError, KeyError, TypeError):
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise BidsError(f"{bids_dir}: the BIDS validator failed ({detail[-1] if detail else 'no output'})") from None
    errors = [issue for issue in issues if issue.get("severity") == "error"]
    if errors:
        first = errors[0]
        where = first.get("location") or ""
        raise BidsError(f"{bids_dir}: not valid BIDS: {len(errors)} error(s), first: {first.get('code')} "
                        f"{where} (see bids-validator-deno {bids_dir}, or skip the validation)")
    return [issue for issue in issues if issue.get("severity") == "warning"]
