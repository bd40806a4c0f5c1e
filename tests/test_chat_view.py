"""The chat view people prefer (issue 17): the sidebar of the agent's chats with its fragments, the timings under
replies, and the agent's last 30 days — each over the same services as the API."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from tests.browser import browser, sign_up_in
from tests.helpers import parse_sse
from tests.voice import spoken
from webapp.models import ChatSession, Message, VoiceTurn
from webapp.pages.charts import activity_chart, voice_timeline
from webapp.services import stats
from webapp.services.runtime import Runtime
from webapp.services.stats import DayActivity

HTML = {"Accept": "text/html"}


async def api(http: httpx.AsyncClient, token: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await http.post(f"/api/v1{path}", json=body, headers={"X-CSRF-Token": token})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def agent_with_chats(http: httpx.AsyncClient, token: str, titles: list[str]) -> tuple[str, list[str]]:
    agent = await api(http, token, "/agents", {"name": "Tutor", "prompt": "Answer briefly."})
    chats = [(await api(http, token, f"/agents/{agent['id']}/sessions", {"title": t}))["id"] for t in titles]
    return agent["id"], chats


async def set_activity(runtime: Runtime, session_id: str, moment: datetime) -> None:
    async with runtime.db.write() as db:
        await db.execute(update(ChatSession).where(ChatSession.id == session_id).values(activity_at=moment))


async def add_reply(
    runtime: Runtime,
    session_id: str,
    *,
    at: datetime,
    latency_ms: int | None = None,
    status: str = "complete",
    source: str = "text",
    role: str = "assistant",
    tokens: tuple[int, int] | None = None,
) -> str:
    """A stored message, as a finished turn leaves it (only what these tests read)."""
    async with runtime.db.write() as db:
        chat = await db.get(ChatSession, session_id)
        assert chat is not None
        chat.message_count += 1
        message = Message(
            session_id=session_id,
            seq=chat.message_count,
            role=role,
            content="Four.",
            source=source,
            status=status,
            latency_ms=latency_ms,
            prompt_tokens=tokens[0] if tokens else None,
            completion_tokens=tokens[1] if tokens else None,
            created_at=at,
        )
        db.add(message)
        await db.flush()
        return message.id


def sidebar(html: str) -> str:
    found = re.search(r'<nav id="sidebar".*?</nav>', html, re.S)
    assert found, html
    return found[0]


def sidebar_ids(html: str) -> list[str]:
    return re.findall(r'<li class="sidebar-item[^"]*" id="sidebar-chat-[^"]+" data-session-id="([^"]+)"', html)


def marked(html: str) -> list[str]:
    """The sessions whose sidebar link says it is the page on screen."""
    return re.findall(r'<a class="sidebar-link" id="sidebar-link-([^"]+)" href="[^"]+" aria-current="page"', html)


# --- sidebar ---------------------------------------------------------------------------------------------------------


async def test_the_sidebar_lists_the_agents_chats_newest_activity_first_with_this_one_marked(
    app: FastAPI, runtime: Runtime
) -> None:
    async with browser(app) as http:
        token = await sign_up_in(http, "ada@example.com")
        _, (old, middle, new) = await agent_with_chats(http, token, ["Old", "Middle", "New"])
        _, (elsewhere,) = await agent_with_chats(http, token, ["Another agent's"])
        now = datetime.now(UTC)
        for hours, chat in ((5, old), (3, new), (1, middle)):  # activity, not creation, decides the order
            await set_activity(runtime, chat, now - timedelta(hours=hours))

        page = await http.get(f"/sessions/{new}", headers=HTML)
        assert page.status_code == 200, page.text
        side = sidebar(page.text)
        assert sidebar_ids(side) == [middle, new, old]
        assert elsewhere not in side
        assert marked(side) == [new]
        # Every link swaps the chat area in place (no reload) and moves the URL along.
        for chat in (middle, new, old):
            link = re.search(rf'<a class="sidebar-link" id="sidebar-link-{chat}"[^>]*>', side)
            assert link, side
            for attribute in (
                f'href="/sessions/{chat}"',
                f'hx-get="/sessions/{chat}"',
                'hx-target="#chat-layout"',
                'hx-select="#chat-layout"',
                'hx-swap="outerHTML show:window:top"',
                'hx-push-url="true"',
            ):
                assert attribute in link[0]
        assert 'id="chat-layout"' in page.text and 'id="sidebar-toggle"' in page.text
        assert 'aria-controls="sidebar" aria-expanded="false"' in page.text

        other = await http.get(f"/sessions/{old}", headers=HTML)
        assert marked(sidebar(other.text)) == [old]


async def test_new_chat_from_the_sidebar_lands_on_the_new_chat(app: FastAPI) -> None:
    async with browser(app) as http:
        token = await sign_up_in(http, "ada@example.com")
        agent_id, (first,) = await agent_with_chats(http, token, ["First"])
        side = sidebar((await http.get(f"/sessions/{first}", headers=HTML)).text)
        form = re.search(r"<form [^>]*>", side)
        assert form and f'hx-post="/agents/{agent_id}/sessions"' in form[0] and 'hx-push-url="true"' in form[0]

        started = await http.post(f"/agents/{agent_id}/sessions", headers={"HX-Request": "true", "X-CSRF-Token": token})
        assert started.status_code == 303
        landed = await http.get(started.headers["location"], headers={"HX-Request": "true"})
        new = started.headers["location"].rsplit("/", 1)[1]
        assert sidebar_ids(sidebar(landed.text)) == [new, first]
        assert marked(landed.text) == [new]


async def test_renaming_in_the_sidebar_answers_its_item(app: FastAPI) -> None:
    async with browser(app) as http:
        token = await sign_up_in(http, "ada@example.com")
        _, (current, other) = await agent_with_chats(http, token, ["Current", "Other"])
        hx = {"HX-Request": "true", "X-CSRF-Token": token}

        renamed = await http.post(
            f"/sessions/{other}/rename", params={"view": "sidebar"}, headers=hx | {"HX-Prompt": "Fractions"}
        )
        assert renamed.status_code == 200, renamed.text
        assert sidebar_ids(renamed.text) == [other]
        assert '<span class="sidebar-title" id="sidebar-title-' in renamed.text and ">Fractions</span>" in renamed.text
        assert "<title>" not in renamed.text and "hx-swap-oob" not in renamed.text
        assert 'aria-current="page"' not in renamed.text

        # The chat on screen: its window title and breadcrumb follow (a <title> and an out-of-band swap for htmx).
        here = await http.post(
            f"/sessions/{current}/rename",
            params={"view": "sidebar", "current": "true"},
            headers=hx | {"HX-Prompt": "Decimals"},
        )
        assert "<title>Decimals · Parley</title>" in here.text
        assert '<span id="chat-title" aria-current="page" hx-swap-oob="true">Decimals</span>' in here.text
        assert marked(here.text) == [current]
        assert (await http.get(f"/api/v1/sessions/{current}")).json()["title"] == "Decimals"

        # The agent's page keeps its own fragment.
        listed = await http.post(f"/sessions/{other}/rename", headers=hx | {"HX-Prompt": "Listed"})
        assert f'<li class="session" id="session-{other}"' in listed.text


async def test_deleting_from_the_sidebar(app: FastAPI, runtime: Runtime) -> None:
    async with browser(app) as http:
        token = await sign_up_in(http, "ada@example.com")
        agent_id, (oldest, older, newest) = await agent_with_chats(http, token, ["Oldest", "Older", "Newest"])
        now = datetime.now(UTC)
        for hours, chat in ((3, oldest), (2, older), (1, newest)):
            await set_activity(runtime, chat, now - timedelta(hours=hours))
        hx = {"HX-Request": "true", "X-CSRF-Token": token}

        # Another chat: its item goes, nothing else happens.
        gone = await http.post(f"/sessions/{older}/delete", params={"view": "sidebar"}, headers=hx)
        assert gone.status_code == 200 and gone.text == "" and "hx-location" not in gone.headers
        assert (await http.get(f"/api/v1/sessions/{older}")).status_code == 404

        # The chat on screen: the most recently active other chat takes its place, swapped in like a sidebar link.
        here = await http.post(f"/sessions/{newest}/delete", params={"view": "sidebar", "current": "true"}, headers=hx)
        assert here.status_code == 200, here.text
        assert json.loads(here.headers["hx-location"]) == {
            "path": f"/sessions/{oldest}",
            "target": "#chat-layout",
            "select": "#chat-layout",
            "swap": "outerHTML show:window:top",
        }
        # The last one: back to the agent's page.
        last = await http.post(f"/sessions/{oldest}/delete", params={"view": "sidebar", "current": "true"}, headers=hx)
        location = json.loads(last.headers["hx-location"])
        assert location["path"] == f"/agents/{agent_id}" and location["select"] == "main"
        chats = await http.get(f"/api/v1/agents/{agent_id}/sessions")
        assert chats.json()["items"] == []

        refused = await http.post(f"/sessions/{oldest}/delete", params={"view": "sideways"}, headers=hx)
        assert refused.status_code == 422


# --- timings ---------------------------------------------------------------------------------------------------------


async def test_a_voice_reply_shows_its_stage_bar_and_a_text_reply_its_latency_and_tokens(
    app: FastAPI, runtime: Runtime
) -> None:
    async with browser(app) as http:
        token = await sign_up_in(http, "ada@example.com")
        _, (chat,) = await agent_with_chats(http, token, ["Timed"])
        now = datetime.now(UTC)
        await add_reply(runtime, chat, at=now, role="user", source="text", latency_ms=None)
        typed = await add_reply(runtime, chat, at=now, latency_ms=1234, tokens=(12, 34))
        await add_reply(runtime, chat, at=now, role="user", source="voice")
        spoken_reply = await add_reply(runtime, chat, at=now, source="voice", latency_ms=900)
        timings = {"transcribing": 500, "thinking": 1000, "speaking": 500, "first_audio": 1200}
        async with runtime.db.write() as db:
            db.add(
                VoiceTurn(
                    session_id=chat,
                    status="done",
                    upload_path="x.wav",
                    upload_format="wav",
                    assistant_message_id=spoken_reply,
                    timings_ms=timings,
                )
            )

        page = (await http.get(f"/sessions/{chat}", headers=HTML)).text
        voice = re.search(rf'data-message-id="{spoken_reply}">.*?</article>', page, re.S)
        assert voice, page
        bar = voice[0]
        assert 'class="timings voice-timings" data-total-ms="2000"' in bar
        stages = re.findall(r'data-stage="(\w+)" data-ms="(\d+)" x="([\d.]+)"\s+y="0" width="([\d.]+)"', bar)
        assert stages == [("transcribing", "500", "0.0", "25.0"), ("thinking", "1000", "25.0", "50.0"),
                          ("speaking", "500", "75.0", "25.0")]  # fmt: skip
        assert 'data-stage="first_audio" data-ms="1200"' in bar and 'x1="60.0"' in bar
        for caption in ("transcribe 500 ms", "think 1.0 s", "speak 500 ms", "first audio 1.2 s"):
            assert caption in bar
        assert 'role="img"' in bar and 'aria-label="Timings: transcribe 500 ms' in bar
        assert "text-timings" not in bar

        text = re.search(rf'data-message-id="{typed}">.*?</article>', page, re.S)
        assert text, page
        assert '<span data-latency-ms="1234">1.2 s</span>' in text[0]
        assert 'data-prompt-tokens="12" data-completion-tokens="34">12 in / 34 out tokens' in text[0]
        assert "voice-timings" not in text[0]
        assert page.count('class="timings') == 2  # nothing under the questions


async def test_the_live_voice_turn_ends_with_its_stage_bar(app: FastAPI) -> None:
    async with browser(app) as http:
        token = await sign_up_in(http, "ada@example.com")
        _, (chat,) = await agent_with_chats(http, token, ["Spoken"])
        files = {"audio": ("clip.wav", spoken("wav"), "audio/wav")}
        accepted = await http.post(f"/sessions/{chat}/voice", files=files, headers={"X-CSRF-Token": token})
        assert accepted.status_code == 202, accepted.text
        events = parse_sse((await http.get(accepted.headers["location"], headers={"Accept": "text/event-stream"})).text)
        name, done = events[-1]
        assert name == "done", events
        for stage in ("transcribing", "thinking", "speaking", "first_audio"):
            assert f'data-stage="{stage}"' in done["html"], done["html"]
        # The same markup the history shows after a reload.
        page = (await http.get(f"/sessions/{chat}", headers=HTML)).text
        assert done["html"].count("voice-timings") == page.count("voice-timings") == 1


def test_the_stage_bar_needs_something_timed() -> None:
    assert voice_timeline(None) is None and voice_timeline({}) is None
    assert voice_timeline({"first_audio": 300}) is None
    only = voice_timeline({"transcribing": 200})
    assert only is not None and [(s.key, s.x, s.width) for s in only.stages] == [("transcribing", 0.0, 100.0)]
    assert only.first_audio_x is None


# --- the agent's last 30 days ----------------------------------------------------------------------------------------


async def test_turns_per_day_and_median_latency(app: FastAPI, runtime: Runtime) -> None:
    async with browser(app) as http:
        token = await sign_up_in(http, "ada@example.com")
        agent_id, (chat, other_chat) = await agent_with_chats(http, token, ["One", "Two"])
        _, (elsewhere,) = await agent_with_chats(http, token, ["Another agent's"])
        owner_id = (await http.get("/api/v1/me")).json()["id"]
        today = datetime.now(UTC).date()

        def at(days_ago: int, hour: int = 12) -> datetime:
            return datetime.combine(today - timedelta(days=days_ago), time(hour), tzinfo=UTC)

        # Today: three replies in two chats (median of 100, 200, 300), the questions not counted.
        for latency, session in ((300, chat), (100, other_chat), (200, chat)):
            await add_reply(runtime, session, at=at(0, 1), role="user")
            await add_reply(runtime, session, at=at(0, 1), latency_ms=latency)
        # Two days ago: an even count (median of 100 and 400), a failed reply that counts as a turn but has no
        # latency worth a median, and a reply just before midnight UTC.
        await add_reply(runtime, chat, at=at(2, 0), latency_ms=400)
        await add_reply(runtime, chat, at=at(2, 9), latency_ms=50_000, status="failed")
        await add_reply(runtime, chat, at=datetime.combine(today - timedelta(days=1), time(0), tzinfo=UTC)
                        - timedelta(microseconds=1), latency_ms=100)  # fmt: skip
        # Yesterday: nothing. Thirty days ago: outside the window. Another agent: not this one's.
        await add_reply(runtime, chat, at=at(30), latency_ms=999)
        await add_reply(runtime, elsewhere, at=at(0), latency_ms=999)

        days = await stats.daily_activity(runtime, owner_id=owner_id, agent_id=agent_id)
        assert len(days) == 30 and days[0].day == today - timedelta(days=29) and days[-1].day == today
        by_day = {day.day: (day.turns, day.median_latency_ms) for day in days}
        assert by_day[today] == (3, 200)
        assert by_day[today - timedelta(days=1)] == (0, None)
        assert by_day[today - timedelta(days=2)] == (3, 250)
        assert sum(day.turns for day in days) == 6
        assert all(by_day[day] == (0, None) for day in by_day if day < today - timedelta(days=2))

        page = await http.get(f"/agents/{agent_id}", headers=HTML)
        assert page.status_code == 200, page.text
        assert f'data-day="{today.isoformat()}" data-turns="3"\n       data-median-ms="200"' in page.text
        yesterday = (today - timedelta(days=1)).isoformat()
        assert f'data-day="{yesterday}" data-turns="0"\n       data-median-ms=""' in page.text
        assert "6 turns in the last 30 days" in page.text
        assert page.text.count('<g class="day"') == 30


async def test_another_users_agent_has_no_activity_to_show(app: FastAPI) -> None:
    async with browser(app) as ada, browser(app) as bob:
        ada_token = await sign_up_in(ada, "ada@example.com")
        await sign_up_in(bob, "bob@example.com")
        agent_id, _ = await agent_with_chats(ada, ada_token, [])
        assert (await bob.get(f"/agents/{agent_id}", headers=HTML)).status_code == 404


@pytest.mark.parametrize("turns", [[0] * 30, [0] * 29 + [4]])
def test_the_chart_scales_to_the_busiest_day(turns: list[int]) -> None:
    start = date(2026, 11, 1)
    days = [DayActivity(start + timedelta(days=n), count, 100 * n if count else None) for n, count in enumerate(turns)]
    chart = activity_chart(days)
    assert len(chart.bars) == 30 and chart.max_turns == max(turns)
    assert [bar.height > 0 for bar in chart.bars] == [count > 0 for count in turns]
    assert all(0 <= bar.x < chart.width for bar in chart.bars)
    if max(turns):
        assert max(bar.height for bar in chart.bars) <= chart.height
        assert chart.median_line.count(",") == 1
    else:
        assert chart.summary == "No turns in the last 30 days." and chart.median_line == ""
