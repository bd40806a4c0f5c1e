"""A real Parley server for the browser tests and the demo: migrated SQLite in a temp dir, uvicorn on a free port."""

from __future__ import annotations

import array
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
SPEECH_CLIP = REPO / "tests" / "data" / "question.wav"

# Headless Debian Chromium as root (see FACTS.md, Browser).
BASE_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


def require_chromium() -> str:
    """The Chromium binary, or a clear failure: the browser tests must never be skipped silently."""
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"{CHROMIUM} is missing: install Debian's chromium (scripts/e2e does it when run as root)")
    return CHROMIUM


def chromium_args(*, fake_mic: Path | None, auto_accept_mic: bool = True) -> list[str]:
    """Launch flags; with `fake_mic`, the capture device plays that WAV once (`%noloop`) instead of a real one."""
    args = list(BASE_ARGS)
    if fake_mic is not None:
        args += ["--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={fake_mic}%noloop"]
    if auto_accept_mic:
        args.append("--use-fake-ui-for-media-stream")
    return args


def make_fake_mic_wav(destination: Path, *, lead_seconds: float = 0.7, tail_seconds: float = 1.0) -> Path:
    """The committed speech clip with silence around it, so recording starts before the first word."""
    with wave.open(str(SPEECH_CLIP), "rb") as source:
        params = source.getparams()
        frames = source.readframes(params.nframes)
    assert params.sampwidth == 2 and params.nchannels == 1, params
    silence = array.array("h", [0]).tobytes()
    with wave.open(str(destination), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(params.framerate)
        out.writeframes(silence * int(lead_seconds * params.framerate))
        out.writeframes(frames)
        out.writeframes(silence * int(tail_seconds * params.framerate))
    return destination


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 60) -> str:
    """The last `lines` lines of a process's log ("" if there is none yet)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Server:
    base_url: str
    root: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)


def server_env(root: Path) -> dict[str, str]:
    """This environment without any of Parley's settings (a developer's key, limits or database), plus the server's."""
    from webapp.config import Settings

    settings = {name.upper() for name in Settings.model_fields}
    env = {key: value for key, value in os.environ.items() if key.upper() not in settings}
    env.update(
        DATABASE_URL=f"sqlite+aiosqlite:///{root / 'e2e.db'}",
        MEDIA_DIR=str(root / "media"),
        SECRET_KEY_FILE=str(root / "secret"),
        AI_PROVIDER="offline",
        PYTHONUNBUFFERED="1",
    )
    return env


@contextmanager
def running_server(
    root: Path, *, startup_timeout: float = 60.0, extra_env: dict[str, str] | None = None, migrate: bool = True
) -> Iterator[Server]:
    """Migrate a fresh database under `root`, serve the app on a free port, and stop it afterwards.

    `migrate=False` skips the migration, for a database already at head (several servers on one database)."""
    root.mkdir(parents=True, exist_ok=True)
    env = server_env(root) | (extra_env or {})
    # cwd is a directory with no `.env`, so a developer's settings file cannot leak into the run.
    workdir = root / "cwd"
    workdir.mkdir(exist_ok=True)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if migrate:
        _migrate(workdir, env)
    port = free_port()
    log_path = root / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "webapp.main:app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(base_url=f"http://127.0.0.1:{port}", root=root, process=process, log_path=log_path)
    try:
        _wait_healthy(server, startup_timeout)
        yield server
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 15 s."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _migrate(workdir: Path, env: dict[str, str]) -> None:
    migrate = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini"), "upgrade", "head"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if migrate.returncode != 0:
        raise RuntimeError(f"alembic upgrade head failed:\n{migrate.stdout}\n{migrate.stderr}")


def _wait_healthy(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(server.base_url + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"uvicorn did not answer /healthz within {timeout:.0f} s:\n{server.log_tail()}")


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def scratch_postgres_database(server_url: str, *, prefix: str) -> Iterator[str]:
    """A fresh database `<prefix>_<pid>` on the server of `server_url` (whose own database is never touched), and
    its URL; dropped on exit. Usable from sync code and from inside a running event loop alike."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    admin_dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"{prefix}_{os.getpid()}"

    async def run(*statements: str) -> None:
        connection = await asyncpg.connect(admin_dsn)
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    def admin(*statements: str) -> None:
        with ThreadPoolExecutor(1) as thread:  # a loop of its own, whether or not the caller runs one
            thread.submit(asyncio.run, run(*statements)).result()

    admin(f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Worker:
    """A voice worker (`python -m webapp.worker`) in a subprocess, its output in `log_path`."""

    root: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.log_path, lines)


@contextmanager
def running_worker(
    root: Path, *, startup_timeout: float = 60.0, extra_env: dict[str, str] | None = None
) -> Iterator[Worker]:
    """Start a voice worker with `server_env(root) | extra_env` (point its DATABASE_URL at a server's migrated
    database), wait until it says it runs voice turns, and stop it with SIGTERM afterwards."""
    root.mkdir(parents=True, exist_ok=True)
    env = server_env(root) | (extra_env or {})
    workdir = root / "cwd"  # no `.env` here, as for the server
    workdir.mkdir(exist_ok=True)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    log_path = root / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "webapp.worker"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    worker = Worker(root=root, process=process, log_path=log_path)
    try:
        deadline = time.monotonic() + startup_timeout
        while "voice worker" not in log_path.read_text(errors="replace"):
            if process.poll() is not None:
                raise RuntimeError(f"the voice worker exited with {process.returncode}:\n{worker.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the voice worker did not start within {startup_timeout:.0f} s:\n{worker.log_tail()}"
                )
            time.sleep(0.1)
        yield worker
    finally:
        stop_process(process)
