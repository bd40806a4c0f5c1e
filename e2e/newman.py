"""Run the Postman collection against a fresh server: `python -m e2e.newman NEWMAN [newman options]`.

scripts/newman installs newman and calls this. The server is `e2e.server.running_server`'s: the offline engines,
a temporary SQLite file, a free port, default rate limits (a run stays far below them: it registers its own user and
sends 2 messages, 5 voice uploads and 1 wrong password).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from e2e.server import REPO, running_server

POSTMAN = REPO / "postman"


def main(argv: list[str]) -> int:
    newman, *options = argv
    with tempfile.TemporaryDirectory(prefix="parley-newman-") as temp, running_server(Path(temp)) as server:
        command = [
            newman,
            "run",
            str(POSTMAN / "parley.postman_collection.json"),
            "--environment",
            str(POSTMAN / "parley.postman_environment.json"),
            "--env-var",
            f"base_url={server.base_url}",
            "--working-dir",
            str(POSTMAN),  # the voice requests upload sample-question.wav and not-audio.txt from here
            *options,
        ]
        status = subprocess.call(command)
        if status != 0:
            print(f"newman failed (exit {status}); the server's log ends with:\n{server.log_tail(40)}", file=sys.stderr)
        return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
