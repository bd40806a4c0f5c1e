"""The README's curl examples, run in order against a real server: the documentation must keep working."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from e2e.server import REPO, running_server

README = REPO / "README.md"


def curl_examples() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Examples with curl") : text.index("\n## ", text.index("## Examples with curl") + 1)]
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def test_readme_curl_examples_run_end_to_end(tmp_path: Path) -> None:
    missing = [tool for tool in ("curl", "jq") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the README examples need {', '.join(missing)} (scripts/e2e installs them when root)")
    blocks = curl_examples()
    assert len(blocks) >= 10, "the examples section moved or lost its bash blocks"
    with running_server(tmp_path / "server") as server:
        script = "\n".join(blocks).replace("http://127.0.0.1:8000", server.base_url)
        script = script.replace("postman/sample-question.wav", str(REPO / "postman" / "sample-question.wav"))
        workdir = tmp_path / "work"
        workdir.mkdir()
        result = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + script],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert result.returncode == 0, f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    out = result.stdout
    assert '"transcript": "One, two, three, four, five."' in out  # faster-whisper, word for word, on the sample
    assert "identical" in out  # the recording comes back byte for byte
    assert "\n304\n" in out and '{"status":404,"code":"agent_not_found"}' in out
    assert '"provider":"offline"' in out
