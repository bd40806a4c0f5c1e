"""A real Parley server in a subprocess, for tests about processes, sockets and the server's own log.

The server itself is `e2e.server.running_server` (migrated SQLite in a temp dir, the offline provider, uvicorn on a
free port, stdout and stderr in `server.log`); this adds a signed-in client and a view of the server's processes.
"""

from __future__ import annotations

import array
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from e2e.server import Server, Worker, running_server, running_worker
from tests.audio_samples import QUESTION_WAV
from tests.helpers import PASSWORD

__all__ = [
    "Server",
    "Worker",
    "children",
    "command_line",
    "descendants",
    "is_running",
    "long_speech_wav",
    "new_session",
    "running_server",
    "running_worker",
    "signed_in",
]


@contextmanager
def signed_in(server: Server, email: str = "owner@example.com") -> Iterator[httpx.Client]:
    """A client for the server's API, signed in as a new account."""
    with httpx.Client(base_url=server.base_url + "/api/v1", timeout=30) as client:
        response = client.post("/auth/register", json={"email": email, "password": PASSWORD})
        assert response.status_code == 201, response.text
        client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        yield client


def new_session(client: httpx.Client) -> str:
    """A new agent and a chat session with it; returns the session's id."""
    agent = client.post("/agents", json={"name": "Tutor", "prompt": "You are a patient tutor. Answer briefly."})
    assert agent.status_code == 201, agent.text
    session = client.post(f"/agents/{agent.json()['id']}/sessions", json={})
    assert session.status_code == 201, session.text
    session_id: str = session.json()["id"]
    return session_id


def long_speech_wav(destination: Path, *, seconds: float) -> Path:
    """`tests/data/question.wav` said over and over, with a little silence between, for about `seconds`."""
    with wave.open(str(QUESTION_WAV), "rb") as source:
        params = source.getparams()
        speech = source.readframes(params.nframes)
    gap = array.array("h", [0] * (params.framerate // 2)).tobytes() * params.nchannels
    one = speech + gap
    repeats = max(1, round(seconds * params.framerate * params.sampwidth * params.nchannels / len(one)))
    with wave.open(str(destination), "wb") as out:
        out.setparams(params)
        out.writeframes(one * repeats)
    return destination


def children(pid: int) -> set[int]:
    """The live processes whose parent is `pid` (by scanning /proc, so threads' children count too)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:  # gone meanwhile
            continue
        ppid = next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:"))
        if int(ppid) == pid:
            found.add(int(entry.name))
    return found


def descendants(pid: int) -> set[int]:
    """Children, their children, and so on."""
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        below = set().union(*(children(p) for p in frontier)) - found
        found |= below
        frontier = below
    return found


def is_running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie, dead but not yet reaped by its parent, does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "(gone)"
