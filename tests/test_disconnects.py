"""A client that goes away mid-upload or mid-stream is one line in the server's log, never a traceback (DESIGN §9).

Only a real server shows this: an in-process client cannot drop a connection half-way, and the log to read is the
one uvicorn writes.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.live_server import Server, long_speech_wav, new_session, running_server, signed_in

BOUNDARY = "parley-test-boundary"
NOISE = ("Traceback", "Exception in ASGI application", "ClientDisconnect", "CancelledError", "ERROR")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with running_server(tmp_path / "server") as server:
        yield server


def log_since(server: Server, offset: int) -> list[str]:
    return server.log_path.read_bytes()[offset:].decode(errors="replace").splitlines()


def wait_for_line(server: Server, offset: int, needle: str, timeout: float = 10.0) -> list[str]:
    """The log written since `offset`, once a line with `needle` is in it (and a moment more, for any traceback)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(needle in line for line in log_since(server, offset)):
            time.sleep(0.5)
            return log_since(server, offset)
        time.sleep(0.05)
    pytest.fail(f"no line with {needle!r} in the server log:\n" + "\n".join(log_since(server, offset)))


def connect(server: Server) -> socket.socket:
    url = urlsplit(server.base_url)
    return socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=10)


def assert_healthy(server: Server) -> None:
    response = httpx.get(server.base_url + "/healthz", timeout=10)
    assert response.status_code == 200, response.text


def test_abandoned_upload_is_one_line_and_leaves_no_file(server: Server, tmp_path: Path) -> None:
    media = server.root / "media"
    with signed_in(server) as client:
        session_id = new_session(client)
        token = client.headers["Authorization"]
    audio = long_speech_wav(tmp_path / "clip.wav", seconds=10).read_bytes()
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="audio"; filename="clip.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    declared = len(head) + len(audio) + 64
    path = f"/api/v1/sessions/{session_id}/voice"
    request = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {declared}\r\n\r\n"
    ).encode()
    offset = server.log_path.stat().st_size

    with connect(server) as sock:
        sock.sendall(request + head + audio[: len(audio) // 2])
        # Close only once the server is writing the recording to disk, so there is a partial file to clean up.
        deadline = time.monotonic() + 10
        while not any(p.stat().st_size > 0 for p in media.rglob("*.part")):
            assert time.monotonic() < deadline, "the server never started writing the upload"
            time.sleep(0.02)

    assert "went away" not in server.log_path.read_text(), "a request that ran its course was logged as gone"
    lines = wait_for_line(server, offset, "went away")
    about = [line for line in lines if "went away" in line]
    assert len(about) == 1, lines
    assert "mid-upload" in about[0] and path in about[0] and "bytes" in about[0], about
    assert not [line for line in lines if any(word in line for word in NOISE)], lines
    assert [p for p in media.rglob("*") if p.is_file()] == [], "a partial upload was left behind"
    assert_healthy(server)


def test_dropped_event_stream_is_one_line(server: Server, tmp_path: Path) -> None:
    with signed_in(server) as client:
        session_id = new_session(client)
        clip = long_speech_wav(tmp_path / "clip.wav", seconds=12)  # seconds to recognise: the stream stays open
        with clip.open("rb") as audio:
            turn = client.post(f"/sessions/{session_id}/voice", files={"audio": ("clip.wav", audio, "audio/wav")})
        assert turn.status_code == 202, turn.text
        token = client.headers["Authorization"]
    path = f"/api/v1/voice-turns/{turn.json()['id']}/events"
    offset = server.log_path.stat().st_size
    assert "went away" not in server.log_path.read_text(), "a request that ran its course was logged as gone"

    with connect(server) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {token}\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\nevent:" not in received and b"\nevent:" not in received.partition(b"\r\n\r\n")[2]:
            chunk = sock.recv(4096)
            assert chunk, received
            received += chunk
        assert received.startswith(b"HTTP/1.1 200"), received
        # The first event (the turn's current state) has arrived; the turn is far from done. Hang up.

    lines = wait_for_line(server, offset, "went away")
    about = [line for line in lines if "went away" in line]
    assert len(about) == 1, lines
    assert "mid-stream" in about[0] and path in about[0], about
    assert not [line for line in lines if any(word in line for word in NOISE)], lines
    assert_healthy(server)
