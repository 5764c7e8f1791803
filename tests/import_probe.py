"""What a fresh interpreter has imported after running some code (the start-up tests
assert on what is imported, never on how long it takes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_after(code: str) -> set[str]:
    """The names in ``sys.modules`` after ``code`` ran in a new Python with only this
    checkout's ``src`` on its path."""
    out = subprocess.run([sys.executable, "-c", code + "\nimport json, sys\n"
                          "print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, timeout=60,
                         env={"PYTHONPATH": str(ROOT / "src")})
    return set(json.loads(out.stdout.strip().splitlines()[-1]))
