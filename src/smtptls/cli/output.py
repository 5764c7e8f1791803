"""Shared CLI conventions: exit codes, JSON output, error rendering."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXIT_OK = 0
EXIT_NEGATIVE = 1  # a finding or a negative result (no policy, verification failed)
EXIT_ERROR = 2  # bad input, bad usage, an error


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def add_common(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    """Options most commands share."""
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="machine-readable JSON output")


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples in epilogs as written."""
