"""The token signing secret: generated once and kept (so restarts keep sign-ins), or configured and never written."""

from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path

from tests.apps import make_settings, serve
from tests.helpers import assert_problem, bearer, sign_up
from webapp.config import Settings
from webapp.services.accounts import load_secret_key


async def test_generated_secret_key_is_kept_so_restarts_keep_sign_ins(database_url: str, tmp_path: Path) -> None:
    key_file = tmp_path / "state" / "secret_key"
    settings = make_settings(database_url, tmp_path, secret_key=None, secret_key_file=key_file)
    async with serve(settings, signed_in=False) as first:
        token = (await sign_up(first, "ada@example.com"))["access_token"]
        assert key_file.is_file()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        generated = key_file.read_bytes()
        assert len(generated.strip()) >= 32
    async with serve(settings, signed_in=False) as second:
        me = await second.get("/me", headers=bearer(token))
        assert me.status_code == 200 and me.json()["email"] == "ada@example.com"
    assert key_file.read_bytes() == generated
    # Another installation (another generated key) does not accept it: the key is random, not a built-in default.
    elsewhere = make_settings(database_url, tmp_path, secret_key=None, secret_key_file=tmp_path / "other" / "key")
    async with serve(elsewhere, signed_in=False) as third:
        assert_problem(await third.get("/me", headers=bearer(token)), 401, "unauthorized")
        assert (tmp_path / "other" / "key").read_bytes() != generated


async def test_configured_secret_key_is_used_and_no_file_is_written(database_url: str, tmp_path: Path) -> None:
    key_file = tmp_path / "state" / "secret_key"
    settings = make_settings(database_url, tmp_path, secret_key="a configured secret key!", secret_key_file=key_file)
    async with serve(settings, signed_in=False) as first:
        token = (await sign_up(first, "ada@example.com"))["access_token"]
    assert not key_file.exists()
    async with serve(settings, signed_in=False) as second:
        assert (await second.get("/me", headers=bearer(token))).status_code == 200
    other = make_settings(database_url, tmp_path, secret_key="some other secret key", secret_key_file=key_file)
    async with serve(other, signed_in=False) as third:
        assert_problem(await third.get("/me", headers=bearer(token)), 401, "unauthorized")


def test_processes_starting_together_share_one_generated_key(tmp_path: Path) -> None:
    """Replicas on one volume start at once: every one must read the same, whole key."""
    key_file = tmp_path / "shared" / "secret_key"
    context = multiprocessing.get_context("spawn")
    with context.Pool(6) as pool:
        keys = pool.map(_key_in_a_fresh_process, [str(key_file)] * 12)
    assert len(set(keys)) == 1 and len(keys[0]) >= 48
    assert sorted(p.name for p in key_file.parent.iterdir()) == ["secret_key"]  # no drafts left behind


def _key_in_a_fresh_process(key_file: str) -> bytes:
    return load_secret_key(Settings(secret_key=None, secret_key_file=Path(key_file)))
