"""The chat view in real Chromium (issue 17): the sidebar switches chats without a reload, a voice reply shows its
stage bar, and the colours follow the system's light or dark mode.

With `E2E_SCREENSHOTS=docs` the tests also save the screenshots the README and issue show (docs/chat-*.png,
docs/agent-chart-1280.png)."""

from __future__ import annotations

import re
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta

from playwright.sync_api import Locator, Page, expect

from e2e.conftest import save_screenshot
from e2e.server import Server
from e2e.test_ui import VOICE_TIMEOUT_MS, create_agent, open_new_chat, sign_up, talk

NARROW = {"width": 390, "height": 844}
WIDE = {"width": 1280, "height": 800}


def session_id(page: Page) -> str:
    match = re.search(r"/sessions/([^/?#]+)$", page.url)
    assert match, page.url
    return match.group(1)


def send(page: Page, text: str) -> Locator:
    """Type and send a message; the stored reply that comes back."""
    replies = page.locator('#history .message[data-role="assistant"]')
    before = replies.count()
    page.fill("#message-input", text)
    page.get_by_role("button", name="Send", exact=True).click()
    expect(replies).to_have_count(before + 1)
    expect(page.locator("#history .streaming, #history .pending")).to_have_count(0)
    return replies.nth(before)


def sidebar_link(page: Page, chat: str) -> Locator:
    return page.locator(f"#sidebar-link-{chat}")


def no_reload_marker(page: Page) -> None:
    page.evaluate("window.__marker = 1")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__marker") == 1, "the page was reloaded"


def test_the_sidebar_switches_chats_without_a_reload(page: Page) -> None:
    sign_up(page)
    create_agent(page, "Tutor")
    open_new_chat(page, "Tutor")
    first = session_id(page)
    send(page, "Fractions first")
    expect(page.locator("#chat-title")).to_have_text("Fractions first")

    no_reload_marker(page)
    page.get_by_role("button", name="New chat", exact=True).click()
    expect(page).not_to_have_url(re.compile(first))
    second = session_id(page)
    expect(page.locator("#history .message")).to_have_count(0)
    expect(sidebar_link(page, second)).to_have_attribute("aria-current", "page")
    send(page, "Decimals second")
    # The chat just used moves to the top of the sidebar.
    expect(page.locator("#sidebar-chats .sidebar-title")).to_have_text(["Decimals second", "Fractions first"])
    assert_not_reloaded(page)

    sidebar_link(page, first).click()
    expect(page).to_have_url(re.compile(rf"/sessions/{first}$"))
    expect(page.locator("#history .message .content").first).to_have_text("Fractions first")
    expect(page.locator("#history")).not_to_contain_text("Decimals second")
    expect(sidebar_link(page, first)).to_have_attribute("aria-current", "page")
    expect(sidebar_link(page, second)).not_to_have_attribute("aria-current", "page")
    expect(page).to_have_title("Fractions first · Parley")
    assert_not_reloaded(page)
    # The switched-to chat works: one new reply, in this chat only (the old one's script let go of the page).
    reply = send(page, "Still here?")
    expect(reply.locator(".content")).to_contain_text("Still here?")
    expect(page.locator('#history .message[data-role="assistant"]')).to_have_count(2)
    save_screenshot(page, "chat-sidebar-1280")

    # The browser's back button comes back to the other chat, asked again from the server, still without a reload.
    page.go_back()
    expect(page).to_have_url(re.compile(rf"/sessions/{second}$"))
    expect(page.locator("#history")).to_contain_text("Decimals second")
    assert_not_reloaded(page)
    send(page, "And back")

    # Rename the chat on screen: the sidebar, breadcrumb and window title follow.
    page.once("dialog", lambda dialog: dialog.accept("Decimals, renamed"))
    page.locator(f"#sidebar-chat-{second} .sidebar-rename").click()
    expect(sidebar_link(page, second).locator(".sidebar-title")).to_have_text("Decimals, renamed")
    expect(page.locator("#chat-title")).to_have_text("Decimals, renamed")
    expect(page).to_have_title("Decimals, renamed · Parley")

    # Delete it: the other chat takes its place; then delete that one too: the agent's page.
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(f"#sidebar-chat-{second} .sidebar-delete").click()
    expect(page).to_have_url(re.compile(rf"/sessions/{first}$"))
    expect(page.locator("#sidebar-chats li")).to_have_count(1)
    expect(page.locator("#history")).to_contain_text("Still here?")
    send(page, "After the delete")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(f"#sidebar-chat-{first} .sidebar-delete").click()
    expect(page).to_have_url(re.compile(r"/agents/[^/]+$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Tutor")
    expect(page.locator("li.session")).to_have_count(0)
    assert_not_reloaded(page)


def test_the_sidebar_folds_away_on_a_phone(page: Page) -> None:
    page.set_viewport_size(NARROW)
    sign_up(page)
    create_agent(page, "Tutor")
    open_new_chat(page, "Tutor")
    first = session_id(page)
    send(page, "What is a half of a half?")
    page.goto(f"/sessions/{first}")
    toggle = page.locator("#sidebar-toggle")
    sidebar = page.locator("#sidebar")
    expect(toggle).to_be_visible()
    expect(sidebar).to_be_hidden()
    expect(page.locator("#message-input")).to_be_visible()
    save_screenshot(page, "chat-sidebar-390")

    no_reload_marker(page)
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    expect(sidebar).to_be_visible()
    page.get_by_role("button", name="New chat", exact=True).click()
    expect(page).not_to_have_url(re.compile(first))
    second = session_id(page)
    expect(sidebar).to_be_hidden()  # a chosen chat folds it away again
    page.locator("#sidebar-toggle").click()
    save_screenshot(page, "chat-sidebar-390-open")
    sidebar_link(page, first).click()
    expect(page).to_have_url(re.compile(rf"/sessions/{first}$"))
    expect(page.locator("#history")).to_contain_text("What is a half of a half?")
    assert second != first
    assert_not_reloaded(page)


def test_a_voice_reply_shows_its_stage_bar(page: Page) -> None:
    sign_up(page)
    create_agent(page, "Tutor")
    open_new_chat(page, "Tutor")
    send(page, "What is two plus two?")
    talk(page)
    expect(page.locator("#ptt-status")).to_have_text("Done", timeout=VOICE_TIMEOUT_MS)
    reply = page.locator('#history .message[data-role="assistant"][data-source="voice"]')
    expect(reply).to_have_count(1)

    def check_bar() -> None:
        bar = reply.locator("svg.stage-bar")
        expect(bar).to_be_visible()
        expect(bar.locator("rect.stage")).to_have_count(3)
        for stage in ("transcribing", "thinking", "speaking"):
            width = float(bar.locator(f'rect[data-stage="{stage}"]').get_attribute("width") or 0)
            assert 0 <= width <= 100, (stage, width)
        expect(bar.locator("line.first-audio")).to_have_count(1)
        expect(reply.locator("figcaption")).to_contain_text("transcribe")
        expect(reply.locator("figcaption")).to_contain_text("first audio")
        # Drawn, in colour: the CSP's no-inline-style rule leaves the classes in app.css to paint it.
        fill = bar.locator('rect[data-stage="thinking"]').evaluate("el => getComputedStyle(el).fill")
        assert fill not in ("", "none", "rgb(0, 0, 0)"), fill

    check_bar()  # from the turn's `done` event
    text_reply = page.locator('#history .message[data-role="assistant"][data-source="text"]')
    expect(text_reply.locator(".text-timings")).to_contain_text("tokens")
    page.locator("#message-input").focus()
    save_screenshot(page, "chat-timings-1280")
    page.reload()
    check_bar()  # from the history
    page.set_viewport_size(NARROW)
    reply.scroll_into_view_if_needed()
    save_screenshot(page, "chat-timings-390")


def body_background(page: Page) -> tuple[int, ...]:
    colour = page.evaluate("getComputedStyle(document.body).backgroundColor")
    return tuple(int(part) for part in re.findall(r"\d+", colour)[:3])


def luminance(rgb: tuple[int, ...]) -> float:
    return (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]) / 255


def test_dark_mode_follows_the_system(page: Page) -> None:
    page.emulate_media(color_scheme="light")
    sign_up(page)
    create_agent(page, "Tutor")
    open_new_chat(page, "Tutor")
    send(page, "Is it dark yet?")
    assert luminance(body_background(page)) > 0.8

    page.emulate_media(color_scheme="dark")
    assert luminance(body_background(page)) < 0.2
    text = page.evaluate("getComputedStyle(document.querySelector('.message .content')).color")
    assert luminance(tuple(int(part) for part in re.findall(r"\d+", text)[:3])) > 0.6, text  # light text on it
    page.locator("#message-input").focus()  # a visible focus ring in the screenshot
    save_screenshot(page, "chat-dark-1280")
    page.set_viewport_size(NARROW)
    save_screenshot(page, "chat-dark-390")

    page.emulate_media(color_scheme="light")
    assert luminance(body_background(page)) > 0.8


def backdate_replies(server: Server, chat: str) -> dict[int, int]:
    """Earlier days' replies in `chat`, written straight into the server's SQLite file (the app stores messages only
    as they happen): `days ago → replies`, with every fifth day left empty."""
    made: dict[int, int] = {}
    now = datetime.now(UTC).replace(tzinfo=None)
    with sqlite3.connect(server.root / "e2e.db") as db:
        seq = 1000
        for days_ago in range(1, 30):
            count = 0 if days_ago % 5 == 0 else 1 + (days_ago * 7) % 6
            made[days_ago] = count
            for n in range(count):
                seq += 1
                moment = (now - timedelta(days=days_ago)).replace(hour=9 + n, minute=0, second=0, microsecond=0)
                db.execute(
                    "INSERT INTO message (id, session_id, seq, role, content, source, status, latency_ms, created_at,"
                    " updated_at) VALUES (?, ?, ?, 'assistant', 'Earlier.', 'text', 'complete', ?, ?, ?)",
                    (str(uuid.uuid4()), chat, seq, 600 + 150 * ((days_ago + n) % 7), moment, moment),
                )
    return made


def test_the_agent_page_charts_its_last_30_days(page: Page, server: Server) -> None:
    sign_up(page)
    create_agent(page, "Tutor")
    open_new_chat(page, "Tutor")
    for question in ("One?", "Two?", "Three?"):
        send(page, question)
    earlier = backdate_replies(server, session_id(page))
    page.get_by_role("link", name="Tutor").click()
    chart = page.locator("svg.activity-chart")
    expect(chart).to_be_visible()
    days = chart.locator("g.day")
    expect(days).to_have_count(30)
    expect(days.last).to_have_attribute("data-turns", "3")
    for days_ago in (1, 5, 29):
        expect(days.nth(29 - days_ago)).to_have_attribute("data-turns", str(earlier[days_ago]))
    expect(days.nth(29 - 5)).to_have_attribute("data-median-ms", "")  # an empty day: no median
    expect(page.locator(".activity")).to_contain_text(f"{3 + sum(earlier.values())} turns in the last 30 days")
    save_screenshot(page, "agent-chart-1280", full_page=True)
    page.set_viewport_size(NARROW)
    expect(chart).to_be_visible()
    save_screenshot(page, "agent-chart-390", full_page=True)
