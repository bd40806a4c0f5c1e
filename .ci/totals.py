"""Total every runner's counts from the logs of `.ci/run` into one closing line: `ci: N passed, M failed`.

Usage: python3 .ci/totals.py LOG_DIR. Each log starts with `== STEP NAME` and is named `NN-KIND-STATUS.log`
(KIND: pytest, newman, schemathesis, checks, step; STATUS: the step's exit status). A step that failed without a
count of its own failures counts as one failure, so a red step can never hide behind a green total. Standard library
only: it runs before any venv exists.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

PYTEST_SUMMARY = re.compile(r"^=*\s*(?P<counts>\d+ \w+(?:, \d+ \w+)*) in [\d.]+s")
NEWMAN_ASSERTIONS = re.compile(r"assertions\s*│\s*(\d+)\s*│\s*(\d+)\s*│")
SCHEMATHESIS_CASES = re.compile(r"^\s*(\d+) generated(?P<rest>(?:, [^\n]+)?)$")
PLAIN = re.compile(r"^(?:\S+: )?(\d+) passed, (\d+) failed")


def counts(kind: str, text: str) -> tuple[int, int]:
    """(passed, failed) as the runner reported them; (0, 0) when it printed no count."""
    lines = text.splitlines()
    if kind == "pytest":
        for line in reversed(lines):
            if match := PYTEST_SUMMARY.match(line.strip()):
                found = dict((word, int(n)) for n, word in (part.split(" ", 1) for part in match["counts"].split(", ")))
                return found.get("passed", 0), found.get("failed", 0) + found.get("error", 0) + found.get("errors", 0)
    elif kind == "newman":
        if match := NEWMAN_ASSERTIONS.search(text):
            executed, failed = int(match[1]), int(match[2])
            return executed - failed, failed
    elif kind == "schemathesis":
        for line in reversed(lines):
            if match := SCHEMATHESIS_CASES.match(line):
                rest = match["rest"]
                passed = re.search(r"(\d+) passed", rest)
                failures = re.search(r"(\d+) (?:found|failed)", rest)
                return int(passed[1]) if passed else 0, int(failures[1]) if failures else 0
    elif kind == "checks":
        for line in reversed(lines):
            if match := PLAIN.match(line.strip()):
                return int(match[1]), int(match[2])
    return 0, 0


def main(log_dir: Path) -> int:
    total_passed = total_failed = 0
    for log in sorted(log_dir.glob("*.log")):
        _, kind, status = log.stem.split("-")
        passed, failed = counts(kind, log.read_text(errors="replace"))
        if kind == "step" and status == "0":
            passed = 1  # a step with no runner of its own (lint, types): one check
        if status != "0" and failed == 0:
            failed = 1
        name = log.read_text(errors="replace").partition("\n")[0].removeprefix("== ")
        print(f"  {passed:6d} passed / {failed} failed   {name}")
        total_passed, total_failed = total_passed + passed, total_failed + failed
    print(f"ci: {total_passed} passed, {total_failed} failed")
    return 1 if total_failed else 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
