"""Rendered replies and the Stop button, in Chromium, with the openai provider against `tests/fake_openai.py` (which
writes whatever reply a test scripts, as slowly as it asks).

A reply's markdown becomes HTML on the server (webapp/markdown.py) and its code blocks copy to the clipboard;
`<script>` and `onerror=` in a reply do nothing; Stop (or Esc) ends a slow streamed reply within a second, and the
history keeps the partial reply as `cancelled`.

Screenshots of both, at 1280 and 390 px wide, go to `test-results/`, or to the folder `E2E_SCREENSHOTS` names
(`E2E_SCREENSHOTS=docs` refreshes the committed ones: docs/chat-markdown-*.png, docs/chat-stop-*.png).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Dialog, Locator, Page, expect

from e2e.conftest import open_context, save_screenshot, watched_page
from e2e.server import Server
from e2e.test_ui import chat_ready, squash
from tests.fake_openai import FakeOpenAI

WIDE = {"width": 1280, "height": 900}
NARROW = {"width": 390, "height": 844}
STOP_WITHIN_S = 1.0

CODE = 'def greet(name: str) -> str:\n    return f"Hello, {name}! <b>not bold</b> & friends"'
LONG_CODE = (
    "curl -s -H 'Authorization: Bearer $KEY' https://example.com/api/v1/agents/0123456789abcdef/sessions?limit=20"
)
RICH = f"""Here is what you asked for:

- **Boil** the water
- *Steep* the tea for `3` minutes
- Pour and enjoy

| Tea | Water temperature | Steeping time | Notes |
|:----|:-----------------:|--------------:|-------|
| Green | 80 °C | 2 min | Cooler water keeps it from turning bitter |
| Black | 95 °C | 4 min | Add milk if you like, after steeping |

```python
{CODE}
```

```bash
{LONG_CODE}
```

See [the guide](https://example.com/tea) for more.
"""

HOSTILE = """Here you go: <script>window.__xss = "script"; alert("script")</script>
<img src="x" onerror="window.__xss = 'img'; alert('img')">
<svg onload="alert('svg')"></svg> <iframe src="javascript:alert('frame')"></iframe>
[click me](javascript:alert('link')) ![pixel](x "onerror=alert(1)")
<a href="#" onclick="alert('a')">raw link</a>
"""

STORY = " ".join(f"Sentence {n} of a long and winding story that goes on and on." for n in range(1, 61))


@pytest.fixture
def chat_context(browser: Browser, openai_server: Server) -> Iterator[BrowserContext]:
    context = open_context(browser, openai_server, microphone=False)
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    yield context
    context.close()


@pytest.fixture
def chat_page(chat_context: BrowserContext, openai_server: Server, request: pytest.FixtureRequest) -> Iterator[Page]:
    yield from watched_page(chat_context, openai_server, request)


def send(page: Page, text: str) -> Locator:
    """Send `text` from the composer; the last assistant bubble (the one this message's reply goes in)."""
    page.fill("#message-input", text)
    page.get_by_role("button", name="Send").click()
    return page.locator('#history .message[data-role="assistant"]').last


def no_page_overflow(page: Page) -> None:
    """Nothing makes the page itself scroll sideways: wide content scrolls inside its bubble."""
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways: {widths}"


def test_a_markdown_reply_renders_as_html_and_its_code_copies(chat_page: Page, upstream: FakeOpenAI) -> None:
    page = chat_page
    page.set_viewport_size(WIDE)
    upstream.reply_text = RICH
    chat_ready(page)

    reply = send(page, "How do I make tea? Use **markdown**.")
    content = reply.locator(".content.markdown")
    expect(content).to_have_count(1)  # the stored reply replaced the streamed plain text at `done`
    expect(page.locator("#history .streaming")).to_have_count(0)
    expect(content.locator("ul > li")).to_have_count(3)
    expect(content.locator("li strong")).to_have_text("Boil")
    expect(content.locator("li em")).to_have_text("Steep")
    expect(content.locator("table th")).to_have_text(["Tea", "Water temperature", "Steeping time", "Notes"])
    expect(content.locator("table tbody tr")).to_have_count(2)
    expect(content.locator("table td.align-right").first).to_have_text("2 min")
    expect(content.locator(".code-block")).to_have_count(2)
    expect(content.locator(".code-block .code-lang")).to_have_text(["python", "bash"])
    expect(content.locator(".code-block pre code").first).to_have_text(CODE + "\n")
    link = content.get_by_role("link", name="the guide")
    expect(link).to_have_attribute("href", "https://example.com/tea")
    expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
    # The question stays as typed.
    question = page.locator('#history .message[data-role="user"] .content').last
    expect(question).to_have_text("How do I make tea? Use **markdown**.")
    expect(question.locator("strong")).to_have_count(0)

    # The copy button copies the code, exactly, and says so.
    copy = content.locator(".code-block").first.get_by_role("button", name="Copy")
    copy.click()
    expect(content.locator(".code-block").first.locator(".copy-code")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == CODE
    expect(content.locator(".code-block").first.locator(".copy-code")).to_have_text("Copy", timeout=5_000)

    no_page_overflow(page)
    reply.scroll_into_view_if_needed()
    save_screenshot(page, "chat-markdown-1280")

    # The history renders it the same way after a reload; at 390 px wide tables and code scroll inside the bubble.
    page.set_viewport_size(NARROW)
    page.reload()
    reply = page.locator('#history .message[data-role="assistant"]').last
    expect(reply.locator(".content.markdown table")).to_have_count(1)
    no_page_overflow(page)
    for name, box in (("table", reply.locator(".table-wrap")), ("long code", reply.locator(".code-block pre").nth(1))):
        sizes = box.evaluate("(el) => [el.scrollWidth, el.clientWidth, getComputedStyle(el).overflowX]")
        assert sizes[0] > sizes[1] and sizes[2] == "auto", (name, sizes)
    bubble = reply.bounding_box()
    assert bubble and bubble["x"] + bubble["width"] <= NARROW["width"], bubble
    reply.locator("table").scroll_into_view_if_needed()
    save_screenshot(page, "chat-markdown-390")


def test_script_and_onerror_in_a_reply_are_inert(chat_page: Page, upstream: FakeOpenAI) -> None:
    page = chat_page
    upstream.reply_text = HOSTILE
    upstream.token_delay = 0.01
    dialogs: list[str] = []

    def dismissed(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismissed)
    chat_ready(page)

    reply = send(page, "Show me some HTML")
    expect(reply.locator(".content.markdown")).to_have_count(1)
    for _ in range(2):  # as the stream's `done` left it, then as the history renders it
        content = reply.locator(".content")
        expect(content).to_contain_text('<script>window.__xss = "script"')  # shown as text, not run
        expect(content).to_contain_text("<img src=")
        expect(reply.locator("script, img, svg, iframe, [onerror], [onload], [onclick], [style]")).to_have_count(0)
        hrefs = reply.locator("a").evaluate_all("(links) => links.map((a) => a.getAttribute('href'))")
        assert not [href for href in hrefs if href is None or not href.startswith("http")], hrefs
        page.wait_for_timeout(300)  # time for an error event or a load to fire, had anything been injected
        assert page.evaluate("window.__xss") is None
        assert page.evaluate("document.querySelectorAll('#history img, #history script').length") == 0
        assert dialogs == [], dialogs
        page.reload()
        reply = page.locator('#history .message[data-role="assistant"]').last
    reply.scroll_into_view_if_needed()
    save_screenshot(page, "chat-inert-html-1280")
    page.set_viewport_size(NARROW)
    reply.scroll_into_view_if_needed()
    save_screenshot(page, "chat-inert-html-390")


def stop_and_time(page: Page, reply: Locator, stop: Callable[[], object]) -> float:
    """Wait until a few words streamed in, stop (`stop()`), and return how long until the bubble settled."""
    content = reply.locator(".content")
    page.wait_for_function("(el) => el.textContent.split(' ').length > 6", arg=content.element_handle(), timeout=15_000)
    expect(page.locator("#stop-reply")).to_be_visible()
    started = time.monotonic()
    stop()
    expect(reply).to_have_class(re.compile(r"\bcancelled\b"), timeout=5_000)
    return time.monotonic() - started


def check_stopped(page: Page, session_id: str, count: int) -> None:
    """The stored history: `count` turns, each a question and a partial reply marked `cancelled`, shown as such."""
    history = page.request.get(f"/api/v1/sessions/{session_id}/messages").json()["items"]
    assert [(m["role"], m["status"]) for m in history] == [("user", "complete"), ("assistant", "cancelled")] * count
    page.reload()
    replies = page.locator('#history .message[data-role="assistant"]')
    expect(replies).to_have_count(count)
    for index, stored in enumerate(history[1::2]):
        written = stored["content"]
        assert written and len(written) < len(STORY) and STORY.startswith(written), written
        bubble = replies.nth(index)
        expect(bubble).to_have_class(re.compile(r"\bcancelled\b"))
        expect(bubble.locator("header")).to_contain_text("stopped")
        assert squash(bubble.locator(".content").inner_text()) == squash(written)
    expect(page.locator("#stop-reply")).to_be_hidden()


def test_stop_and_esc_end_a_slow_streamed_reply(chat_page: Page, upstream: FakeOpenAI) -> None:
    page = chat_page
    page.set_viewport_size(WIDE)
    upstream.reply_text = STORY
    upstream.token_delay = 0.15  # ~600 words: a minute and a half, unless stopped
    chat_ready(page)
    session_id = page.url.rsplit("/", 1)[1]
    stop_button = page.locator("#stop-reply")
    expect(stop_button).to_be_hidden()

    # The Stop button, clicked.
    reply = send(page, "Tell me a long story")
    page.wait_for_function(
        "() => document.querySelector('#history .streaming .content')?.textContent.split(' ').length > 6"
    )
    save_screenshot(page, "chat-stop-1280")
    took = stop_and_time(page, reply, stop_button.click)
    print(f"stop button: the reply settled as cancelled {took * 1000:.0f} ms after the click")
    assert took < STOP_WITHIN_S, f"the reply took {took:.2f} s to stop"
    expect(stop_button).to_be_hidden()
    expect(page.locator("#history .streaming, #history .pending")).to_have_count(0)
    expect(page.locator("#chat-error")).to_be_empty()
    check_stopped(page, session_id, 1)

    # Esc does the same (the focus is on Send, as after a click on it), here at 390 px.
    page.set_viewport_size(NARROW)
    reply = send(page, "Another one, please")
    page.wait_for_function(
        "() => document.querySelector('#history .streaming .content')?.textContent.split(' ').length > 6"
    )
    save_screenshot(page, "chat-stop-390")
    no_page_overflow(page)
    took = stop_and_time(page, reply, lambda: page.keyboard.press("Escape"))
    print(f"Esc: the reply settled as cancelled {took * 1000:.0f} ms after the key")
    assert took < STOP_WITHIN_S, f"the reply took {took:.2f} s to stop"
    check_stopped(page, session_id, 2)

    # The session is free at once: the next question gets its whole answer, and Stop goes away with it.
    upstream.reply_text = "The end."
    upstream.token_delay = 0.0
    reply = send(page, "How does it end?")
    expect(reply.locator(".content")).to_have_text("The end.")
    expect(reply).not_to_have_class(re.compile(r"\bcancelled\b"))
    expect(stop_button).to_be_hidden()
