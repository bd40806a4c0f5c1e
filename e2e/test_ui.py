"""The web UI in real Chromium against a real server: accounts, agents, sessions, streamed text chat, push-to-talk."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from e2e.conftest import open_context, watched_page
from e2e.server import Server

PASSWORD = "correct horse battery"
HOLD_MS = 3_500  # the padded clip lasts ~3.2 s: 0.7 s silence, ~1.5 s of speech, 1 s silence
VOICE_TIMEOUT_MS = 45_000

# Records, as they happen: every text #ptt-status shows (and when), every state of a streaming assistant message,
# when the pending bubble of a spoken question (its transcript) first shows, and the playback of every spoken segment
# chat.js queues in #reply-queue (its `playing` and `ended` events, on the page's performance.now() clock).
WATCH = """() => {
  window.__stages = [];
  window.__timeline = [];
  window.__partials = [];
  window.__asked = null;
  window.__playback = [];
  window.__audios = [];
  const status = document.getElementById("ptt-status");
  new MutationObserver(() => {
    const text = status.textContent.trim();
    window.__stages.push(text);
    window.__timeline.push({text, at: performance.now()});
  }).observe(status, {childList: true, characterData: true, subtree: true});
  const history = document.getElementById("history");
  new MutationObserver(() => {
    if (window.__asked === null && history.querySelector('.message[data-role="user"].pending')) {
      window.__asked = performance.now();
    }
    for (const el of history.querySelectorAll('.message[data-role="assistant"].streaming')) {
      window.__partials.push(el.querySelector(".content")?.textContent ?? "");
    }
  }).observe(history, {childList: true, characterData: true, subtree: true, attributes: true});
  const watch = (audio) => {
    const entry = {src: audio.getAttribute("src"), added: performance.now(), playing: null, ended: null};
    window.__playback.push(entry);
    window.__audios.push(audio);
    audio.addEventListener("playing", () => { entry.playing ??= performance.now(); });
    audio.addEventListener("ended", () => { entry.ended ??= performance.now(); entry.duration = audio.duration; });
  };
  new MutationObserver((records) => {
    for (const record of records) {
      for (const node of record.addedNodes) if (node instanceof HTMLAudioElement) watch(node);
    }
  }).observe(document.getElementById("reply-queue"), {childList: true});
}"""

# Every segment of the voice turn `turn` that was queued has played to its end (and at least one was queued).
PLAYED = """(turn) => {
  const mine = window.__playback.filter((p) => p.src.startsWith(`/api/v1/voice-turns/${turn}/`));
  return mine.length > 0 && mine.every((p) => p.playing !== null && p.ended !== null);
}"""

# Whether any reply segment is still playing (or about to: neither paused nor ended).
SOUNDING = "() => window.__audios.some((audio) => !audio.paused && !audio.ended)"

FETCH = """async (src) => {
  const response = await fetch(src, {cache: "no-store"});
  const body = await response.arrayBuffer();
  return {status: response.status, type: response.headers.get("content-type"), size: body.byteLength};
}"""


def squash(text: str) -> str:
    return " ".join(text.split())


def sign_up(page: Page, *, name: str = "Ada") -> str:
    email = f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.com"
    page.goto("/signup")
    page.fill("#email", email)
    page.fill("#display_name", name)
    page.fill("#password", PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(re.compile(r"/$"))
    return email


def create_agent(page: Page, name: str, prompt: str = "You are a patient maths tutor. Answer briefly.") -> Locator:
    form = page.locator("form#create-agent")
    form.locator("#agent-name").fill(name)
    form.locator("#agent-prompt").fill(prompt)
    form.get_by_role("button", name="Create agent").click()
    agent = page.locator("li.agent", has=page.locator("a.agent-link", has_text=name))
    expect(agent).to_have_count(1)
    return agent


def open_new_chat(page: Page, agent_name: str) -> None:
    page.goto("/")
    page.locator("a.agent-link", has_text=agent_name).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(agent_name)
    page.locator("#new-session").click()
    expect(page).to_have_url(re.compile(r"/sessions/[^/]+$"))
    expect(page.locator("#ptt")).to_be_visible()


def chat_ready(page: Page, agent_name: str = "Tutor") -> None:
    sign_up(page)
    create_agent(page, agent_name)
    open_new_chat(page, agent_name)
    page.evaluate(WATCH)


def test_sign_up_sign_out_and_sign_in(page: Page) -> None:
    email = sign_up(page, name="Grace")
    expect(page.locator(".badge")).to_have_text("offline")
    create_agent(page, "Keeper")

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/signin$"))
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/signin$"))  # signed out for real

    page.fill("#email", email)
    page.fill("#password", "not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()

    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator("a.agent-link")).to_have_text(["Keeper"])


def test_agents_empty_state_create_edit_and_delete(page: Page) -> None:
    sign_up(page)
    empty = page.get_by_text("No agents yet")
    expect(empty).to_be_visible()
    expect(page.locator("li.agent")).to_have_count(0)

    agent = create_agent(page, "Tutor")
    expect(empty).to_be_hidden()
    expect(page.locator("#agent-name")).to_have_value("")  # the form is ready for the next one
    agent_id = agent.get_attribute("data-agent-id")
    expect(agent.locator("a.agent-link")).to_have_attribute("href", f"/agents/{agent_id}")

    agent.locator("button.edit-agent").click()
    form = page.locator("form.edit-agent-form")
    expect(form.locator("#edit-name")).to_have_value("Tutor")
    form.locator("#edit-name").fill("Maths tutor")
    form.locator("#edit-prompt").fill("You teach fractions with pizza.")
    form.locator("#edit-voice").fill("en-gb")
    form.get_by_role("button", name="Save").click()
    expect(form).to_have_count(0)
    agent = page.locator(f'li.agent[data-agent-id="{agent_id}"]')
    expect(agent.locator("a.agent-link")).to_have_text("Maths tutor")
    expect(agent).to_contain_text("You teach fractions with pizza.")

    page.reload()  # the edit was stored, not just swapped into the page
    expect(agent.locator("a.agent-link")).to_have_text("Maths tutor")

    page.once("dialog", lambda dialog: dialog.accept())
    agent.locator("button.delete-agent").click()
    expect(page.locator("li.agent")).to_have_count(0)
    expect(empty).to_be_visible()
    page.reload()
    expect(page.locator("li.agent")).to_have_count(0)


def test_sessions_new_rename_and_delete(page: Page) -> None:
    sign_up(page)
    create_agent(page, "Tutor")
    open_new_chat(page, "Tutor")
    chat_url = page.url
    open_new_chat(page, "Tutor")
    page.get_by_role("link", name="Tutor").click()  # the breadcrumb back to the agent's sessions
    sessions = page.locator("li.session")
    expect(sessions).to_have_count(2)

    first = page.locator(f'li.session[data-session-id="{chat_url.rsplit("/", 1)[1]}"]')
    page.once("dialog", lambda dialog: dialog.accept("Fractions"))
    first.locator("button.rename-session").click()
    expect(first.locator("a.session-link")).to_have_text("Fractions")
    page.reload()
    expect(first.locator("a.session-link")).to_have_text("Fractions")

    page.once("dialog", lambda dialog: dialog.accept())
    first.locator("button.delete-session").click()
    expect(sessions).to_have_count(1)
    expect(page.locator("a.session-link", has_text="Fractions")).to_have_count(0)
    page.reload()
    expect(sessions).to_have_count(1)
    assert page.request.get(chat_url).status == 404


def test_text_chat_streams_the_reply(page: Page) -> None:
    chat_ready(page)
    said = "What is a half of a half?"
    page.fill("#message-input", said)
    page.get_by_role("button", name="Send").click()

    assistant = page.locator('#history .message[data-role="assistant"]')
    expect(assistant).to_have_count(1)
    expect(page.locator("#history .streaming")).to_have_count(0)
    final = squash(assistant.locator(".content").inner_text())
    assert f"You said: “{said}”" in final
    partials = [squash(text) for text in page.evaluate("window.__partials")]
    growing = [text for text in dict.fromkeys(partials) if text and len(text) < len(final)]
    assert len(growing) >= 3, f"the reply did not stream token by token: {partials}"
    assert all(final.startswith(text) for text in growing), (growing, final)

    user = page.locator('#history .message[data-role="user"]')
    expect(user.locator(".content")).to_have_text(said)
    expect(user).to_have_attribute("data-source", "text")
    expect(page.locator("#message-input")).to_have_value("")

    # Enter sends too; the history survives a reload, with timestamps.
    page.fill("#message-input", "And a third of that?")
    page.press("#message-input", "Enter")
    expect(assistant).to_have_count(2)
    expect(page.locator("#history .streaming")).to_have_count(0)  # finished and stored before reloading
    expect(assistant.nth(1).locator(".content")).to_contain_text("message number 2")
    page.reload()
    messages = page.locator("#history .message")
    expect(messages).to_have_count(4)
    expect(messages.locator("time")).to_have_count(4)
    expect(messages.nth(2).locator(".content")).to_have_text("And a third of that?")


def hold_to_talk(page: Page, *, keyboard: bool = False, hold_ms: int = HOLD_MS) -> None:
    button = page.locator("#ptt")
    if keyboard:
        button.focus()
        page.keyboard.down("Space")
        page.wait_for_timeout(hold_ms)
        page.keyboard.up("Space")
        return
    button.scroll_into_view_if_needed()
    box = button.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.wait_for_timeout(hold_ms)
    page.mouse.up()


def talk(page: Page, *, keyboard: bool = False, hold_ms: int = HOLD_MS) -> str:
    """Hold to talk and release; the id of the voice turn the recording started."""
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/voice")) as sent:
        hold_to_talk(page, keyboard=keyboard, hold_ms=hold_ms)
    assert sent.value.status == 202, sent.value.status
    location = sent.value.header_value("location") or ""
    match = re.fullmatch(r"/voice-turns/([^/]+)/events", location)
    assert match, f"unexpected Location: {location!r}"
    return match.group(1)


def check_segments_played(page: Page, turn_id: str) -> list[dict[str, Any]]:
    """Every spoken segment of the finished turn was queued once, in order, and played to its end, one after the
    other; the queue is empty afterwards. Returns the turn's playback records (`src`, `playing`, `ended` in ms,
    `duration` in s)."""
    page.wait_for_function(PLAYED, arg=turn_id, timeout=30_000)
    turn = page.request.get(f"/api/v1/voice-turns/{turn_id}").json()
    expected = [f"/api/v1/voice-turns/{turn_id}/segments/{n}" for n in range(len(turn["segments"]))]
    assert expected, f"the turn has no spoken segments: {turn}"
    assert [segment["url"] for segment in turn["segments"]] == expected, turn["segments"]
    recorded: list[dict[str, Any]] = page.evaluate("window.__playback")
    playback = [entry for entry in recorded if entry["src"].startswith(f"/api/v1/voice-turns/{turn_id}/")]
    assert [entry["src"] for entry in playback] == expected, f"segments not played in order: {playback}"
    for entry in playback:  # heard in real time, not skipped through
        assert entry["ended"] - entry["playing"] >= 0.8 * entry["duration"] * 1000, f"played too fast: {entry}"
    for before, after in itertools.pairwise(playback):
        assert before["ended"] <= after["playing"], f"two segments overlapped: {before}, {after}"
    expect(page.locator("#reply-queue audio")).to_have_count(0)  # each one is removed once it has played
    assert not page.evaluate(SOUNDING)
    expect(page.locator("#play-reply")).to_be_hidden()
    return playback


def check_voice_round_trip(page: Page, turn_id: str) -> None:
    expect(page.locator("#ptt-status")).to_have_text("Done", timeout=VOICE_TIMEOUT_MS)
    expect(page.locator("#chat-error")).to_be_empty()
    stages = page.evaluate("window.__stages")
    assert any(stage.startswith("Recording 0:0") for stage in stages), stages
    # The stages must appear in order. "Transcribing" alone may be missed: the events stream starts with the turn's
    # current state, which is already "thinking" when transcription finished before the browser subscribed.
    order = ["Queued", "Transcribing", "Thinking", "Speaking", "Done"]
    shown = [stage for text in stages for stage in order if text.startswith(stage)]
    assert shown == sorted(shown, key=order.index), f"stages out of order: {stages}"
    assert {"Thinking", "Speaking", "Done"} <= set(shown), f"stages missing: {stages}"

    user = page.locator('#history .message[data-role="user"][data-source="voice"]')
    expect(user).to_have_count(1)
    heard = user.locator(".content").inner_text().lower()
    assert re.search(r"\b(three|3)\b.*\b(four|4)\b", heard), heard  # in words or digits, as the recogniser writes
    reply = page.locator('#history .message[data-role="assistant"][data-source="voice"]')
    expect(reply).to_have_count(1)
    expect(reply.locator(".content")).to_contain_text("You said")
    expect(page.locator("#history .pending, #history .streaming")).to_have_count(0)

    check_segments_played(page, turn_id)
    for message, kind in ((user, "recording"), (reply, "reply")):
        src = message.locator("audio").get_attribute("src")
        assert src, f"the {kind} has no player"
        fetched = page.evaluate(FETCH, src)
        assert fetched["status"] == 200, (kind, src, fetched)
        assert fetched["type"].startswith("audio/") and fetched["size"] > 1_000, (kind, src, fetched)


def test_push_to_talk_round_trip(page: Page) -> None:
    chat_ready(page)
    turn_id = talk(page)
    check_voice_round_trip(page, turn_id)


def test_push_to_talk_with_the_space_bar(page: Page) -> None:
    chat_ready(page)
    turn_id = talk(page, keyboard=True)
    check_voice_round_trip(page, turn_id)


@pytest.fixture
def page_without_microphone(browser: Browser, server: Server, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = open_context(browser, server, microphone=False)
    yield from watched_page(context, server, request)
    context.close()


def test_microphone_denied_shows_a_clear_message(page_without_microphone: Page) -> None:
    page = page_without_microphone
    chat_ready(page)
    hold_to_talk(page, hold_ms=500)
    error = page.locator("#chat-error")
    expect(error).to_contain_text(re.compile(r"microphone", re.IGNORECASE))
    expect(error).to_contain_text(re.compile(r"denied|blocked|allow", re.IGNORECASE))
    expect(page.locator("#ptt-status")).not_to_contain_text("Recording")
    expect(page.locator("#history .message")).to_have_count(0)


def test_api_docs_work_offline_with_a_file_picker_for_uploads(page: Page, server: Server) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto("/docs")
    expect(page.get_by_role("button", name=re.compile("Authorize"))).to_be_visible()
    upload = page.locator("#operations-voice-create_voice_turn")
    expect(upload).to_contain_text("Send a recording")
    upload.locator(".opblock-summary").click()
    expect(upload.locator('input[type="file"]')).to_be_visible()  # the multipart `audio` field: a file picker
    expect(upload).to_contain_text("unsupported_audio")  # error responses list their codes
    outside = [url for url in requested if not url.startswith(server.base_url)]
    assert not outside, f"/docs loaded assets from elsewhere: {outside}"


# Reports every Content-Security-Policy violation to the test (a binding survives navigations; the page's own
# scripts could not report from an inline script anyway: the policy forbids them).
REPORT_CSP = """document.addEventListener("securitypolicyviolation", (e) => {
  window.__reportCsp(`${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`);
});"""


def test_no_content_security_policy_violations(page: Page) -> None:
    """Signing up, managing an agent, chatting by text and opening /docs all run under the CSP with nothing blocked."""
    events: list[str] = []  # securitypolicyviolation events
    console: list[str] = []  # Chromium's console errors about the policy
    page.expose_function("__reportCsp", lambda text: events.append(text))
    page.add_init_script(REPORT_CSP)
    page.on("console", lambda message: console.append(message.text) if "Security Policy" in message.text else None)

    # The watch works: a script added inline is blocked, and reported both ways.
    page.goto("/signin")
    page.evaluate('() => { const s = document.createElement("script"); s.textContent = "1"; document.body.append(s); }')
    for _ in range(50):  # reports arrive asynchronously
        if events and console:
            break
        page.wait_for_timeout(100)
    assert events and console, f"an inline script was not reported as a CSP violation: {events}, {console}"
    events.clear()
    console.clear()

    sign_up(page)
    agent = create_agent(page, "Tutor")
    expect(page.locator("#agent-name")).to_have_value("")  # the form reset (was an inline hx-on handler)
    agent.locator("button.edit-agent").click()
    page.locator("form.edit-agent-form").get_by_role("button", name="Cancel").click()
    expect(page.locator("form.edit-agent-form")).to_have_count(0)
    open_new_chat(page, "Tutor")
    page.fill("#message-input", "What is a half of a half?")
    page.get_by_role("button", name="Send").click()
    expect(page.locator('#history .message[data-role="assistant"]')).to_have_count(1)
    expect(page.locator("#history .streaming")).to_have_count(0)
    expect(page.locator("#chat-error")).to_be_empty()

    page.goto("/docs")
    expect(page.get_by_role("button", name=re.compile("Authorize"))).to_be_visible()
    page.locator("#operations-agents-list_agents .opblock-summary").click()
    expect(page.locator("#operations-agents-list_agents")).to_contain_text("Responses")
    page.wait_for_timeout(500)  # violation reports are delivered asynchronously
    assert not events and not console, f"Content-Security-Policy violations: {events} {console}"
