"""The official BIDS validator (``bids-validator-deno``), run before any work is done."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from ..errors import BidsError


def validate_bids(bids_dir: str | Path, timeout: int = 600) -> list[dict]:
    """Run the schema validator on ``bids_dir``; raise on errors, return the warnings."""
    executable = shutil.which("bids-validator-deno")
    if executable is None:
        raise BidsError("bids-validator-deno is not installed (pip install bids-validator-deno), "
                        "or use --skip-bids-validation")
    result = subprocess.run([executable, str(bids_dir), "--format", "json"],
                            capture_output=True, text=True, timeout=timeout)
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
                        f"{where} (see bids-validator-deno {bids_dir}, or use --skip-bids-validation)")
    return [issue for issue in issues if issue.get("severity") == "warning"]
