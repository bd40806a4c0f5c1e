"""What a new user meets on a fresh clone: sign-up first, a breadcrumb that follows the chat's new title, times in the
reader's own time zone, and a chat view that works on a 390 px wide phone.

Each test keeps a screenshot under test-results/first-run/ (ignored by git) to look at.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, ViewportSize, expect

from e2e.conftest import ARTIFACTS, VIEWPORT, watched_page
from e2e.server import REPO, Server, running_server
from e2e.test_ui import VOICE_TIMEOUT_MS, create_agent, hold_to_talk, open_new_chat, sign_up

SCREENSHOTS = ARTIFACTS / "first-run"
TIME_ZONE = "Asia/Tokyo"  # UTC+9 all year: a local time that can never pass for UTC
DESKTOP = ViewportSize(width=VIEWPORT["width"], height=VIEWPORT["height"])
PHONE: ViewportSize = {"width": 390, "height": 844}
SHORT_CLIP = REPO / "tests" / "data" / "hello-world.wav"
LONG_NAME = "Professor Archibald Montgomery-Featherstonehaugh of Lower Wallop"


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"\nscreenshot: {path}")
    return path


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own: the shared one has accounts as soon as any other test has run."""
    with running_server(tmp_path_factory.mktemp("fresh")) as server:
        yield server


def new_context(
    browser: Browser,
    server: Server,
    *,
    viewport: ViewportSize = DESKTOP,
    timezone_id: str | None = None,
    permissions: list[str] | None = None,
) -> BrowserContext:
    context = browser.new_context(
        base_url=server.base_url, viewport=viewport, timezone_id=timezone_id, permissions=permissions or []
    )
    context.set_default_timeout(10_000)
    return context


@pytest.fixture
def fresh_page(browser: Browser, fresh_server: Server, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = new_context(browser, fresh_server)
    yield from watched_page(context, fresh_server, request)
    context.close()


@pytest.fixture
def tokyo_page(browser: Browser, server: Server, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = new_context(browser, server, timezone_id=TIME_ZONE)
    yield from watched_page(context, server, request)
    context.close()


@pytest.fixture
def phone_page(browser: Browser, server: Server, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = new_context(browser, server, viewport=PHONE, permissions=["microphone"])
    yield from watched_page(context, server, request)
    context.close()


def test_a_fresh_install_starts_at_sign_up(fresh_page: Page) -> None:
    page = fresh_page
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/signup$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Create an account")
    screenshot(page, "fresh-install-signup")

    sign_up(page, name="Ada")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/signin$"))
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/signin$"))  # an account exists now: signing in is the way back
    page.goto("/agents/unknown")
    expect(page).to_have_url(re.compile(r"/signin\?next=%2Fagents%2Funknown$"))
    screenshot(page, "after-first-account-signin")


def test_sign_out_is_a_quiet_button(page: Page) -> None:
    sign_up(page, name="Quiet")
    primary, signout = page.evaluate(
        """() => [document.querySelector("#create-agent button[type=submit], main button"),
                  document.querySelector(".signout button")].map((b) => getComputedStyle(b).backgroundColor)"""
    )
    assert signout != primary, (signout, primary)
    assert signout in ("rgba(0, 0, 0, 0)", "transparent"), signout
    screenshot(page, "signout-button")


def untitled_chat(page: Page, agent: str) -> Locator:
    """A new chat with a new agent, its breadcrumb reading "New chat"; marks the document to detect a reload."""
    sign_up(page)
    create_agent(page, agent)
    open_new_chat(page, agent)
    crumb = page.locator("#chat-title")
    expect(crumb).to_have_text("New chat")
    expect(page).to_have_title("New chat · Parley")
    page.evaluate("window.__sameDocument = true")
    return crumb


def test_the_breadcrumb_takes_the_first_messages_title(page: Page) -> None:
    crumb = untitled_chat(page, "Namer")

    page.fill("#message-input", "Fractions for beginners")
    page.press("#message-input", "Enter")
    expect(page.locator('#history .message[data-role="assistant"]:not(.streaming)')).to_have_count(1)
    expect(crumb).to_have_text("Fractions for beginners")
    expect(page).to_have_title("Fractions for beginners · Parley")
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    screenshot(page, "breadcrumb-after-text")

    page.fill("#message-input", "And decimals?")  # only the first message names the session
    page.press("#message-input", "Enter")
    expect(page.locator('#history .message[data-role="assistant"]:not(.streaming)')).to_have_count(2)
    expect(crumb).to_have_text("Fractions for beginners")


def test_the_breadcrumb_takes_the_first_voice_turns_title(page: Page) -> None:
    crumb = untitled_chat(page, "Listener")

    hold_to_talk(page)
    expect(page.locator("#ptt-status")).to_have_text("Done", timeout=VOICE_TIMEOUT_MS)
    heard = page.locator('#history .message[data-role="user"][data-source="voice"] .content').inner_text()
    expect(crumb).not_to_have_text("New chat")
    title = crumb.inner_text()
    assert title and " ".join(heard.split()).startswith(title.rstrip("…")), (title, heard)
    expect(page).to_have_title(f"{title} · Parley")
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    screenshot(page, "breadcrumb-after-voice")


def check_local_times(page: Page) -> int:
    """Every <time> shows its moment in Tokyo time, with the UTC time as its tooltip; returns how many there are."""
    times = page.locator("time[datetime]")
    expect(times.first).to_have_attribute("data-local", "")
    rows = times.evaluate_all("(els) => els.map((el) => [el.dateTime, el.textContent.trim(), el.title])")
    for moment, shown, tooltip in rows:
        utc = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        assert shown == utc.astimezone(ZoneInfo(TIME_ZONE)).strftime("%Y-%m-%d %H:%M"), (moment, shown)
        assert tooltip == utc.strftime("%Y-%m-%d %H:%M UTC"), (moment, tooltip)
    return len(rows)


def test_times_are_shown_in_the_readers_time_zone(tokyo_page: Page) -> None:
    page = tokyo_page
    assert page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone") == TIME_ZONE
    sign_up(page)
    create_agent(page, "Clock")
    open_new_chat(page, "Clock")
    page.fill("#message-input", "What time is it?")
    page.press("#message-input", "Enter")
    expect(page.locator('#history .message[data-role="assistant"]:not(.streaming)')).to_have_count(1)
    assert check_local_times(page) == 2  # the messages added by the stream
    screenshot(page, "local-times-chat")

    page.reload()
    assert check_local_times(page) == 2  # the messages rendered by the server
    page.locator(".crumbs a").nth(1).click()  # the agent's chats, with "last <time>"
    expect(page.locator("li.session")).to_have_count(1)
    assert check_local_times(page) == 1
    screenshot(page, "local-times-sessions")


def upload_voice(page: Page, session_id: str) -> None:
    """A voice turn from the committed short clip, through the API with the browser's own cookie, and wait for it."""
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content") or ""
    accepted = page.request.post(
        f"/api/v1/sessions/{session_id}/voice",
        headers={"X-CSRF-Token": csrf},
        multipart={"audio": {"name": "hello.wav", "mimeType": "audio/wav", "buffer": SHORT_CLIP.read_bytes()}},
    )
    assert accepted.status == 202, accepted.text()
    turn_url = f"/api/v1/voice-turns/{accepted.json()['id']}"
    deadline = time.monotonic() + VOICE_TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        turn = page.request.get(turn_url).json()
        if turn["status"] in ("done", "failed"):
            assert turn["status"] == "done", turn
            return
        time.sleep(0.3)
    raise AssertionError(f"the voice turn did not finish: {turn}")


LAYOUT = """() => {
  const box = (el) => el.getBoundingClientRect();
  const input = document.getElementById("message-input");
  const style = getComputedStyle(input);
  const context = document.createElement("canvas").getContext("2d");
  context.font = style.font;
  const room = input.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const form = document.getElementById("send-form");
  return {
    pageWidth: document.documentElement.scrollWidth,
    placeholder: context.measureText(input.placeholder).width,
    room,
    composer: [form.scrollWidth, form.clientWidth, box(form).right],
    send: box(form.querySelector("button")).right,
    headers: [...document.querySelectorAll("#history .message header")].map((header) => {
      const name = header.querySelector("strong"), time = header.querySelector("time");
      return {
        name: name.textContent, nameTop: box(name).top, timeTop: box(time).top, height: box(header).height,
        lineHeight: parseFloat(getComputedStyle(header).lineHeight), cut: name.scrollWidth > name.clientWidth,
        timeRight: box(time).right, messageRight: box(header.closest(".message")).right,
      };
    }),
    players: [...document.querySelectorAll("#history .message audio")].map((audio) => box(audio).width),
  };
}"""


def test_the_chat_view_works_390_px_wide(phone_page: Page) -> None:
    page = phone_page
    sign_up(page, name="Narrow")
    create_agent(page, LONG_NAME)
    open_new_chat(page, LONG_NAME)
    session_id = page.locator("#chat").get_attribute("data-session-id")
    assert session_id
    page.fill("#message-input", "Hi")
    page.press("#message-input", "Enter")
    expect(page.locator('#history .message[data-role="assistant"]:not(.streaming)')).to_have_count(1)
    upload_voice(page, session_id)
    page.reload()
    expect(page.locator("#history .message")).to_have_count(4)
    expect(page.locator("#history audio")).to_have_count(2)
    page.wait_for_timeout(300)  # let the players lay out their controls before the screenshot
    screenshot(page, "chat-390px")

    layout = page.evaluate(LAYOUT)
    assert layout["pageWidth"] <= PHONE["width"], f"the page scrolls sideways: {layout}"
    assert layout["placeholder"] <= layout["room"], f"the placeholder is clipped: {layout}"
    form_scroll, form_client, form_right = layout["composer"]
    assert form_scroll <= form_client and form_right <= PHONE["width"] and layout["send"] <= PHONE["width"], layout
    for header in layout["headers"]:
        assert abs(header["nameTop"] - header["timeTop"]) < 4, f"name and time on separate lines: {header}"
        assert header["height"] < 1.6 * header["lineHeight"], f"the header wraps: {header}"
        assert header["timeRight"] <= header["messageRight"], f"the time sticks out of its bubble: {header}"
    assert any(header["cut"] for header in layout["headers"] if header["name"] == LONG_NAME), layout["headers"]
    assert len(layout["players"]) == 2 and min(layout["players"]) >= 200, f"squeezed players: {layout['players']}"
