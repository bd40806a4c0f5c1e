"""Fuzz the live API with schemathesis: `python -m e2e.fuzz_api [extra st run options]` (scripts/fuzz-api runs it).

Serves a real Parley (offline engines, a temporary SQLite file), signs up, makes an API key, an agent, a session and
one finished voice turn so that the fuzzer also reaches turns and stored audio, then runs `st run` against
`/openapi.json` with every check but one: `positive_data_acceptance` expects every schema-valid request to succeed,
which no schema can promise for an opaque pagination cursor or for the bytes of an audio file. The exit status is
schemathesis's: non-zero on any server error or any response that breaks the documented schema.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from e2e.server import SPEECH_CLIP, running_server

EXCLUDED_CHECKS = "positive_data_acceptance"
SETTINGS = {
    # Thousands of requests from one client: no rate limits, and a turn never waits long for a busy session.
    "RATE_LIMIT_MESSAGES_PER_MINUTE": "0",
    "RATE_LIMIT_VOICE_PER_MINUTE": "0",
    "SESSION_BUSY_TIMEOUT_SECONDS": "5",
}


def call(base: str, method: str, path: str, body: Any = None, *, token: str | None = None) -> Any:
    request = urllib.request.Request(base + path, method=method)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, data, timeout=60) as response:
        return json.loads(response.read() or b"null")


def upload(base: str, path: str, clip: Path, *, token: str) -> Any:
    boundary = "parley-fuzz-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="{clip.name}"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + clip.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(base + path, data=body, method="POST")
    request.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def seed(base: str) -> tuple[str, dict[str, str]]:
    """An API key, and ids of real resources for the path parameters no fuzzed request can create."""
    api = base + "/api/v1"
    account = {"email": "fuzz@example.com", "password": "a long fuzzing password"}
    token = call(api, "POST", "/auth/register", account)["access_token"]
    key = call(api, "POST", "/api-keys", {"name": "schemathesis"}, token=token)["secret"]
    agent = call(api, "POST", "/agents", {"name": "Fuzz", "prompt": "Answer briefly."}, token=key)
    session = call(api, "POST", f"/agents/{agent['id']}/sessions", token=key)
    turn = upload(api, f"/sessions/{session['id']}/voice", SPEECH_CLIP, token=key)
    deadline = time.monotonic() + 120
    while turn["status"] not in ("done", "failed"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the seed voice turn did not finish: {turn}")
        time.sleep(0.5)
        turn = call(api, "GET", f"/voice-turns/{turn['id']}", token=key)
    if turn["status"] != "done":
        raise RuntimeError(f"the seed voice turn failed: {turn}")
    return key, {"turn_id": turn["id"], "message_id": turn["assistant_message_id"]}


def config(parameters: dict[str, str]) -> str:
    lines = ["[parameters]", *(f'"path.{name}" = "{value}"' for name, value in parameters.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="parley-fuzz-") as temp:
        root = Path(temp)
        with running_server(root / "server", extra_env=SETTINGS) as server:
            key, parameters = seed(server.base_url)
            config_file = root / "schemathesis.toml"
            config_file.write_text(config(parameters))
            command = [
                str(Path(sys.executable).with_name("st")),
                "--config-file",
                str(config_file),
                "run",
                f"{server.base_url}/openapi.json",
                "--header",
                f"Authorization: Bearer {key}",
                "--checks",
                "all",
                "--exclude-checks",
                EXCLUDED_CHECKS,
                "--no-color",
                *argv,
            ]
            status = subprocess.call(command, cwd=root)
            errors = [line for line in server.log_tail(10_000).splitlines() if "Traceback" in line]
            if errors:
                print(f"\nThe server logged {len(errors)} traceback(s):\n{server.log_tail(200)}", file=sys.stderr)
                return status or 1
            return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
