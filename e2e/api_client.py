"""A few calls to a running Parley with nothing but the standard library (usable from any Python, any venv).

`python -m e2e.api_client URL CLIP` asks the server at URL one spoken question: it signs up, makes an agent and a
session, uploads CLIP with `?wait=true`, and prints the reply's media type, its size and what was heard.
scripts/check-docker runs it against the image's replayed install; e2e/fuzz_api.py uses the calls to seed its data.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
import uuid
from email.message import Message
from pathlib import Path
from typing import Any


def call(api: str, method: str, path: str, body: Any = None, *, token: str | None = None) -> Any:
    """A JSON call to `api` + `path`; the decoded JSON answer (an HTTP error status raises `HTTPError`)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(api + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read() or b"null")


def upload(api: str, path: str, clip: Path, *, token: str) -> tuple[Message, bytes]:
    """POST `clip` as the multipart field `audio`; the answer's headers and body."""
    boundary = uuid.uuid4().hex
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="{clip.name}"\r\n\r\n'
    body = head.encode() + clip.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(api + path, data=body, method="POST")
    request.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.headers, response.read()


def sign_up(api: str, email: str, password: str = "a long test password") -> str:
    """A new account's access token."""
    account = {"email": email, "password": password}
    return str(call(api, "POST", "/auth/register", account)["access_token"])


def new_session(api: str, token: str) -> str:
    agent = call(api, "POST", "/agents", {"name": "Check", "prompt": "Answer briefly."}, token=token)
    return str(call(api, "POST", f"/agents/{agent['id']}/sessions", token=token)["id"])


def finished_turn(api: str, turn_id: str, *, token: str, timeout: float = 120) -> Any:
    """Poll the voice turn until it is done or failed."""
    deadline = time.monotonic() + timeout
    while (turn := call(api, "GET", f"/voice-turns/{turn_id}", token=token))["status"] not in ("done", "failed"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the voice turn did not finish in {timeout:.0f} s: {turn}")
        time.sleep(0.5)
    return turn


def main(argv: list[str]) -> int:
    base_url, clip = argv
    api = base_url.rstrip("/") + "/api/v1"
    token = sign_up(api, f"check-{uuid.uuid4().hex[:8]}@example.com")
    session = new_session(api, token)
    headers, audio = upload(api, f"/sessions/{session}/voice?wait=true", Path(clip), token=token)
    turn = call(api, "GET", f"/voice-turns/{headers['X-Voice-Turn-Id']}", token=token)
    print(f"{headers['Content-Type']}, {len(audio)} bytes; heard {turn['transcript']!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
