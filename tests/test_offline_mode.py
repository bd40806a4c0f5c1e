"""Offline mode says what it is: in the start-up log, in the offline reply (and how much of it is spoken), on the
agents page. The API side (`runs_as`, `GET /voices`) is in test_agents_api.py, the engines in test_offline_speech.py."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from tests.apps import make_settings, openai_settings
from tests.browser import browser, create_agent_by_page, sign_up_in
from tests.fake_openai import FakeOpenAI
from tests.live_server import running_server
from webapp.ai.base import ChatMessage
from webapp.ai.offline import compose_reply, spoken_text
from webapp.ai.sentences import split_text
from webapp.config import Settings
from webapp.main import create_app

OFFLINE_LINE = (
    "parley: provider offline — chat: canned stand-in reply (no language model), speech recognition: faster-whisper "
    "tiny.en (English; loaded on first use; pocketsphinx if it cannot load), speech synthesis: espeak-ng (voices: GET "
    "/api/v1/voices); set OPENAI_API_KEY (and optionally OPENAI_BASE_URL) to use OpenAI or a compatible server"
)


# --- the start-up log -------------------------------------------------------------------------------------------------


async def started_log(settings: Settings, caplog: pytest.LogCaptureFixture) -> list[str]:
    """The app's log lines at WARNING and above while it starts and stops."""
    caplog.set_level(logging.WARNING)
    async with LifespanManager(create_app(settings)):
        pass
    return [record.getMessage() for record in caplog.records if record.name.startswith("webapp")]


async def test_start_up_logs_the_offline_provider_and_how_to_switch(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert await started_log(make_settings(database_url, tmp_path), caplog) == [OFFLINE_LINE]


async def test_start_up_logs_the_openai_provider_without_secrets(
    database_url: str, tmp_path: Path, upstream: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    base = upstream.base_url.replace("http://", "http://proxyuser:proxypass@") + "?token=hush"
    settings = openai_settings(
        database_url, tmp_path, upstream, openai_api_key="sk-very-secret", openai_base_url=base, tts_voice="coral"
    )
    (line,) = await started_log(settings, caplog)
    assert line == (
        f"parley: provider openai at {upstream.base_url.rstrip('/')}/ — chat model gpt-5.4-mini, transcription "
        "gpt-transcribe, speech gpt-4o-mini-tts (voice coral, mp3)"
    )
    for secret in ("sk-very-secret", "proxyuser", "proxypass", "hush"):
        assert secret not in caplog.text


async def test_start_up_names_the_default_openai_url(
    database_url: str, tmp_path: Path, upstream: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    settings = openai_settings(database_url, tmp_path, upstream, openai_base_url=None)
    (line,) = await started_log(settings, caplog)
    assert line.startswith("parley: provider openai at https://api.openai.com/v1/ (default) — chat model ")


async def test_offline_forced_with_a_key_says_how_to_switch_back(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(database_url, tmp_path, openai_api_key="sk-very-secret")
    (line,) = await started_log(settings, caplog)
    assert line.startswith("parley: provider offline — ") and "unset AI_PROVIDER" in line
    assert "sk-very-secret" not in caplog.text


def test_plain_uvicorn_shows_the_provider_line(tmp_path: Path) -> None:
    # uvicorn configures only its own loggers: the line must still reach the server's stderr.
    with running_server(tmp_path / "server") as server:
        log = server.log_path.read_text()
    assert log.count("parley: provider ") == 1, log
    assert OFFLINE_LINE in log.splitlines(), log


# --- the offline reply -----------------------------------------------------------------------------------------------


def reply_to(said: str, prompt: str = "You are a patient maths tutor. Answer briefly.") -> str:
    messages: list[ChatMessage] = [{"role": "system", "content": prompt}, {"role": "user", "content": said}]
    return compose_reply(messages)


def test_offline_reply_is_labelled_and_speaks_only_the_answer() -> None:
    reply = reply_to("What is the capital of France?")
    assert reply == (
        "[Offline mode: no AI model is connected.] You said: “What is the capital of France?” "
        "[My instructions begin: “You are a patient maths tutor.”; this is your message number 1 in this chat; "
        "set OPENAI_API_KEY to talk to a real model]"
    )
    assert spoken_text(reply) == "You said: “What is the capital of France?”"


@pytest.mark.parametrize(
    ("said", "quoted"),
    [
        ("What is the capital of France?", "“What is the capital of France?” "),
        ("Wow!", "“Wow!” "),
        ("It works.", "“It works.” "),
        ("one two three", "“one two three”. "),
        ("x" * 300, "…” "),  # shortened: the ellipsis ends it
    ],
)
def test_a_quote_gets_a_full_stop_only_when_it_has_none(said: str, quoted: str) -> None:
    reply = reply_to(said)
    assert quoted in reply
    assert not re.search(r"[.!?…]”\.", reply), reply


def test_the_closing_note_is_one_segment_of_a_streamed_voice_reply_and_says_nothing() -> None:
    reply = reply_to("What is the capital of France?", prompt="Be a pirate. Say arr.")
    assert "“Be a pirate.”; this is your message number 1" in reply
    segments = split_text(reply)
    assert [spoken_text(segment) for segment in segments] == ["", "You said: “What is the capital of France?”", ""]


def test_brackets_in_what_was_said_cannot_hide_or_reveal_notes() -> None:
    reply = reply_to("read [this] aloud", prompt="You are [secret] here.")
    assert spoken_text(reply) == "You said: “read (this) aloud”."


# --- the agents page -------------------------------------------------------------------------------------------------


async def test_agent_cards_and_forms_show_what_runs_offline(app: FastAPI) -> None:
    async with browser(app) as http:
        token = await sign_up_in(http, "ada@example.com")
        card = await create_agent_by_page(http, token)
        assert card.status_code == 200, card.text
        assert "Offline engine: canned reply, voice en-us" in card.text
        assert "gpt-5.4-mini · voice alloy" not in card.text  # no longer implied to be in use
        agent_id = re.search(r'data-agent-id="([^"]+)"', card.text)
        assert agent_id
        page = (await http.get("/", headers={"Accept": "text/html"})).text
        edit = (await http.get(f"/agents/{agent_id[1]}/edit")).text
    for html, field in ((page, "agent-voice"), (edit, "edit-voice")):
        assert f'list="{field}-names"' in html and f'<datalist id="{field}-names">' in html
        assert '<option value="en-gb">' in html and '<option value="alloy">' not in html
        assert "Other names (like alloy) speak as en-us" in html
        assert "Not used offline" in html
    assert 'placeholder="en-us"' in page
