"""Helper processes die with the server, even when it is killed with SIGKILL (DESIGN §9, Processes).

Offline recognition runs in a pool of child processes, with multiprocessing's resource tracker beside them. A server
killed with `kill -9` runs no clean-up, so they must go by themselves: here, while one is decoding a long clip.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live_server import (
    command_line,
    descendants,
    is_running,
    long_speech_wav,
    new_session,
    running_server,
    signed_in,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads the process tree from /proc")

GRACE_SECONDS = 5.0


def test_recognition_processes_die_with_a_killed_server(tmp_path: Path, helpers: set[int]) -> None:
    clip = long_speech_wav(tmp_path / "long.wav", seconds=60)
    with running_server(tmp_path / "server") as server, signed_in(server) as client:
        pid = server.process.pid
        assert descendants(pid) == set(), "the pool starts on the first voice turn, not before"
        session_id = new_session(client)
        with clip.open("rb") as audio:
            response = client.post(f"/sessions/{session_id}/voice", files={"audio": ("long.wav", audio, "audio/wav")})
        assert response.status_code == 202, response.text
        turn_url = f"/voice-turns/{response.json()['id']}"

        # Wait until the recognition process is decoding the clip: the turn says "transcribing", a worker exists.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = client.get(turn_url).json()["status"]
            assert status in ("queued", "transcribing"), f"the 60 s clip finished too soon ({status}) to test"
            helpers |= descendants(pid)
            if status == "transcribing" and any("multiprocessing" in command_line(p) for p in helpers):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"no recognition process appeared:\n{server.log_tail()}")
        time.sleep(1.0)  # the worker has imported its modules and is inside the decode by now
        helpers |= descendants(pid)
        described = {p: command_line(p) for p in helpers}
        assert any("resource_tracker" in line for line in described.values()), described
        assert client.get(turn_url).json()["status"] == "transcribing", "the decode ended before the kill"

        server.process.send_signal(signal.SIGKILL)
        server.process.wait(timeout=10)

        deadline = time.monotonic() + GRACE_SECONDS
        while (survivors := {p for p in helpers if is_running(p)}) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not survivors, f"still running {GRACE_SECONDS:.0f} s after the server was killed: " + "; ".join(
            f"{p}: {described[p]}" for p in sorted(survivors)
        )


@pytest.fixture
def helpers() -> Iterator[set[int]]:
    """The server's helper processes, as the test finds them; any still running afterwards (the test failed) are
    ended by their ids, so that they do not run on holding ~150 MB each."""
    found: set[int] = set()
    yield found
    for pid in found:
        if is_running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
