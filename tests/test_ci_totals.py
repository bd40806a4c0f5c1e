"""`.ci/totals.py` reads every runner's counts into CI's closing line, and never lets a red step look green."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.databases import ROOT

NEWMAN = """
│              assertions │                216 │                  2 │
"""
SCHEMATHESIS = """
Test cases:
  1761 generated, 1758 passed, 3 failed, 40 skipped
"""


def totals(tmp_path: Path, logs: dict[str, str]) -> tuple[int, str]:
    for name, text in logs.items():
        (tmp_path / name).write_text(f"== {name}\n{text}")
    done = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "totals.py"), str(tmp_path)], capture_output=True, text=True, check=False
    )
    return done.returncode, done.stdout.splitlines()[-1]


def test_every_runner_is_counted(tmp_path: Path) -> None:
    status, line = totals(
        tmp_path,
        {
            "01-pytest-1.log": "....F\n=== 1 failed, 440 passed, 2 skipped in 150.20s ===\n",
            "02-newman-1.log": NEWMAN,
            "03-schemathesis-1.log": SCHEMATHESIS,
            "04-checks-0.log": "ok: /healthz\nbuild-image: 17 passed, 0 failed\n",
            "05-step-0.log": "All checks passed!\n",
        },
    )
    assert line == f"ci: {440 + 214 + 1758 + 17 + 1} passed, {1 + 2 + 3} failed"
    assert status == 1


def test_a_failed_step_without_counts_is_one_failure(tmp_path: Path) -> None:
    status, line = totals(
        tmp_path, {"01-pytest-0.log": "443 passed in 151.93s (0:02:31)\n", "02-step-2.log": "Traceback ...\n"}
    )
    assert (status, line) == (1, "ci: 443 passed, 1 failed")


def test_all_green(tmp_path: Path) -> None:
    status, line = totals(tmp_path, {"01-pytest-0.log": "7 passed in 1.00s\n", "02-step-0.log": ""})
    assert (status, line) == (0, "ci: 8 passed, 0 failed")
