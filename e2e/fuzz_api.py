"""Fuzz the live API with schemathesis: `python -m e2e.fuzz_api [--postgres URL] [st run options]` (scripts/fuzz-api).

Serves a real Parley (offline engines, a temporary SQLite file), signs up, makes an API key, an agent, a session and
one finished voice turn so that the fuzzer also reaches turns and stored audio, then runs `st run` against
`/openapi.json` with every check but one: `positive_data_acceptance` expects every schema-valid request to succeed,
which no schema can promise for an opaque pagination cursor or for the bytes of an audio file. The exit status is
schemathesis's: non-zero on any server error or any response that breaks the documented schema.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from e2e.api_client import call, finished_turn, new_session, sign_up, upload
from e2e.server import SPEECH_CLIP, running_server, scratch_postgres_database

EXCLUDED_CHECKS = "positive_data_acceptance"
SETTINGS = {
    # Thousands of requests from one client: no rate limits, and a turn never waits long for a busy session.
    "RATE_LIMIT_MESSAGES_PER_MINUTE": "0",
    "RATE_LIMIT_VOICE_PER_MINUTE": "0",
    "SESSION_BUSY_TIMEOUT_SECONDS": "5",
}


def seed(base: str) -> tuple[str, dict[str, str]]:
    """An API key, and ids of real resources for the path parameters no fuzzed request can create.

    The account is the one in the sign-in example of the OpenAPI document, so the fuzzer's examples phase signs in
    for real (otherwise every sign-in it sends is a 401, and it warns that authentication failed).
    """
    api = base + "/api/v1"
    spec = json.loads(urllib.request.urlopen(f"{base}/openapi.json", timeout=30).read())
    login = spec["paths"]["/api/v1/auth/login"]["post"]["requestBody"]["content"]["application/json"]
    example = login["schema"].get("examples", [None])[0] or _resolve(spec, login["schema"])["examples"][0]
    token = sign_up(api, example["email"], example["password"])
    key = call(api, "POST", "/api-keys", {"name": "schemathesis"}, token=token)["secret"]
    session = new_session(api, key)
    _, body = upload(api, f"/sessions/{session}/voice", SPEECH_CLIP, token=key)
    turn = finished_turn(api, json.loads(body)["id"], token=key)
    if turn["status"] != "done":
        raise RuntimeError(f"the seed voice turn failed: {turn}")
    return key, {"turn_id": turn["id"], "message_id": turn["assistant_message_id"]}


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A `$ref`'d schema's definition."""
    found: dict[str, Any] = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return found


def config(parameters: dict[str, str]) -> str:
    lines = ["[parameters]", *(f'"path.{name}" = "{value}"' for name, value in parameters.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="serve from a scratch database on this PostgreSQL server (e.g. postgresql+asyncpg://postgres@127.0.0.1/"
        "postgres; that database itself is not touched) instead of SQLite",
    )
    options, st_options = parser.parse_known_args(argv)
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="parley-fuzz-")))
        env = dict(SETTINGS)
        if options.postgres:
            env["DATABASE_URL"] = stack.enter_context(scratch_postgres_database(options.postgres, prefix="parley_fuzz"))
        server = stack.enter_context(running_server(root / "server", extra_env=env))
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
            # One worker: hypothesis describes lambdas by parsing source with `ast`, which CPython 3.11 does not do
            # safely from several threads at once (python/cpython#106905: "AST constructor recursion depth mismatch").
            "--workers",
            "1",
            *st_options,
        ]
        status = subprocess.call(command, cwd=root)
        tracebacks = server.log_tail(100_000).count("Traceback")
        if tracebacks:
            print(f"\nThe server logged {tracebacks} traceback(s):\n{server.log_tail(200)}", file=sys.stderr)
            return status or 1
        return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
