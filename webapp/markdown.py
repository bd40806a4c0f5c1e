"""Assistant replies as HTML: CommonMark (with tables and strikethrough) by markdown-it-py, then nh3's allow-list.

A reply is text a model wrote, and a model can be talked into writing anything, so two layers stand between it and
the page. markdown-it-py runs with raw HTML off (`<script>` in a reply comes out as the text `<script>`) and its own
link check (no `javascript:`, `vbscript:`, `file:` or `data:` links); nh3 then keeps only the tags, attributes,
classes and URL schemes this module produces, whatever got through. Links open in a new tab with
`rel="noopener noreferrer nofollow"`. Images are shown as links, never loaded: a model's image URL is an easy way to
send the conversation to someone else's server. Styles are classes, never `style=` (the CSP has no
`'unsafe-inline'`). Code blocks carry a copy button, whose behaviour static/chat.js binds.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from markupsafe import Markup

LINK_REL = "noopener noreferrer nofollow"

_ALIGN_CLASSES = {f"text-align:{side}": f"align-{side}" for side in ("left", "center", "right")}


def _fence(self: RendererHTML, tokens: Sequence[Token], idx: int, _options: OptionsDict, _env: EnvType) -> str:
    """A fenced or indented code block: the language (the info string's first word) and a copy button above it."""
    token = tokens[idx]
    words = token.info.split(maxsplit=1)
    label = f'<span class="code-lang">{escapeHtml(words[0])}</span>' if words else ""
    return (
        f'<div class="code-block"><div class="code-head">{label}'
        '<button type="button" class="copy-code">Copy</button></div>'
        f"<pre><code>{escapeHtml(token.content)}</code></pre></div>\n"
    )


def _image(self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
    """An image as a link to it (http and https only), labelled with its alt text: nothing is fetched unless someone
    clicks."""
    token = tokens[idx]
    src = str(token.attrs.get("src", ""))
    label = escapeHtml(self.renderInlineAsText(token.children or [], options, env) or src)
    return f'<a href="{escapeHtml(src)}">{label}</a>' if src.lower().startswith(("https:", "http:")) else label


def _table_open(self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
    """Tables scroll sideways inside their wrapper, so a wide one never widens the bubble or the page."""
    return '<div class="table-wrap">' + self.renderToken(tokens, idx, options, env)


def _table_close(self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
    return self.renderToken(tokens, idx, options, env) + "</div>\n"


def _cell_open(self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType) -> str:
    """A table cell's alignment as a class (`align-right`), not markdown-it's inline `style`."""
    token = tokens[idx]
    style = token.attrs.pop("style", None)
    if isinstance(style, str) and style in _ALIGN_CLASSES:
        token.attrSet("class", _ALIGN_CLASSES[style])
    return self.renderToken(tokens, idx, options, env)


def _parser() -> MarkdownIt:
    parser = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    parser.enable(["table", "strikethrough"])
    for name, rule in (
        ("fence", _fence),
        ("code_block", _fence),
        ("image", _image),
        ("table_open", _table_open),
        ("table_close", _table_close),
        ("th_open", _cell_open),
        ("td_open", _cell_open),
    ):
        parser.add_render_rule(name, rule)
    return parser


_PARSER = _parser()

_CLEANER = nh3.Cleaner(
    tags={
        *("p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote"),
        *("strong", "em", "del", "s", "code", "pre", "a", "ul", "ol", "li"),
        *("table", "thead", "tbody", "tr", "th", "td", "div", "span", "button"),
    },
    clean_content_tags={"script", "style"},
    attributes={"a": {"href", "title"}, "ol": {"start"}, "button": {"type"}},
    allowed_classes={
        "div": {"code-block", "code-head", "table-wrap"},
        "span": {"code-lang"},
        "button": {"copy-code"},
        "th": set(_ALIGN_CLASSES.values()),
        "td": set(_ALIGN_CLASSES.values()),
    },
    url_schemes={"http", "https", "mailto"},
    link_rel=LINK_REL,
    set_tag_attribute_values={"a": {"target": "_blank"}},  # a link never takes the conversation away
    strip_comments=True,
)


@lru_cache(maxsize=256)
def render_markdown(text: str | None) -> Markup:
    """A reply's markdown as sanitised HTML, safe to put in a page as it is (the `markdown` template filter)."""
    if not text:
        return Markup("")
    return Markup(_CLEANER.clean(_PARSER.render(text)))  # nh3's output: the allow-list above
