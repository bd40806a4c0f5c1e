"""`webapp.ai.sentences`: where a streamed reply is cut for text-to-speech, and that the cut never depends on how the
reply was chunked, never loses words and never passes its bounds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webapp.ai.sentences import SentenceSplitter, split_text

CASES = [
    pytest.param(
        "Mr. Smith met Dr. Jones and Prof. Lee at St. Mary's vs. the rest. They talked.",
        ["Mr. Smith met Dr. Jones and Prof. Lee at St. Mary's vs. the rest.", "They talked."],
        id="abbreviations",
    ),
    pytest.param(
        "MRS. Ode and ms. Ray sr. came at 9 A.M. and left at 5 p.m. today. Then etc. and approx. ten more. Bye.",
        [
            "MRS. Ode and ms. Ray sr. came at 9 A.M. and left at 5 p.m. today.",
            "Then etc. and approx. ten more.",
            "Bye.",
        ],
        id="abbreviations-any-case",
    ),
    pytest.param(
        "Use a tool e.g. a hammer i.e. this one. Ok.", ["Use a tool e.g. a hammer i.e. this one.", "Ok."], id="eg-ie"
    ),
    pytest.param(
        "No. 5 is the best. The answer is no. No. That is wrong.",
        ["No. 5 is the best.", "The answer is no.", "No.", "That is wrong."],
        id="no-before-a-number-only",
    ),
    pytest.param("J. R. R. Tolkien wrote it. Read it.", ["J. R. R. Tolkien wrote it.", "Read it."], id="initials"),
    pytest.param(
        "Pi is 3.14 and v2.1.0 ships today. See example.com/docs.html for more. Bye.",
        ["Pi is 3.14 and v2.1.0 ships today.", "See example.com/docs.html for more.", "Bye."],
        id="decimals-versions-urls",
    ),
    pytest.param(
        "Go to https://example.com. Then sign in.", ["Go to https://example.com.", "Then sign in."], id="url-ends"
    ),
    pytest.param(
        "Steps:\n1. Boil water.\n2. Add the tea. Stir it.\n10. Serve\n",
        ["Steps:", "1. Boil water.", "2. Add the tea.", "Stir it.", "10. Serve"],
        id="numbered-list",
    ),
    pytest.param("I counted to 3. Then I stopped.", ["I counted to 3.", "Then I stopped."], id="number-not-a-list"),
    pytest.param("- one\n- two\n\n  - three", ["- one", "- two", "- three"], id="bullets"),
    pytest.param(
        "Here is code:\n```python\nx = 1. y = 2\n\nprint(x)! \n```\nDone. Bye.",
        ["Here is code:", "```python\nx = 1. y = 2\n\nprint(x)! \n```", "Done.", "Bye."],
        id="code-fence",
    ),
    pytest.param("```\nprint('a. b')\nx", ["```\nprint('a. b')\nx"], id="code-fence-unclosed"),
    pytest.param("Look:\n```\n```\nEnd.", ["Look:", "End."], id="empty-fence-dropped"),
    pytest.param("Run `ls -a. now` first. Then go.", ["Run `ls -a. now` first.", "Then go."], id="inline-code"),
    pytest.param("Try ``a ` b. c`` here. Ok.", ["Try ``a ` b. c`` here.", "Ok."], id="inline-code-double-ticks"),
    pytest.param("A `stray tick\nNext. Line.", ["A `stray tick", "Next.", "Line."], id="inline-code-ends-at-line"),
    pytest.param('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."], id="straight-quotes"),
    pytest.param("She wrote ‘Done.’ It was “over.” Yes.", ["She wrote ‘Done.’", "It was “over.”", "Yes."], id="curly"),
    pytest.param("(See above.) Then [this!] Ok.", ["(See above.)", "Then [this!]", "Ok."], id="brackets"),
    pytest.param("**Note.** Read it.", ["**Note.**", "Read it."], id="markdown-emphasis"),
    pytest.param("Really?! Yes!! Why?", ["Really?!", "Yes!!", "Why?"], id="punctuation-runs"),
    pytest.param("Well... I see… Fine.", ["Well...", "I see…", "Fine."], id="ellipsis"),
    pytest.param("Wait...what?", ["Wait...what?"], id="no-whitespace-no-end"),
    pytest.param("First line\nSecond line\r\n\nThird", ["First line", "Second line", "Third"], id="line-breaks"),
    pytest.param("... Hello. — ---\n***\nBye.", ["Hello.", "Bye."], id="nothing-to-say-dropped"),
    pytest.param(
        "Sure, here is a long explanation of how this works, step by step.",
        ["Sure, here is a long explanation of how this works,", "step by step."],
        id="first-segment-short",
    ),
    pytest.param("Yes, that works. Next, more.", ["Yes, that works.", "Next, more."], id="short-clause-kept"),
    pytest.param(
        "Ok. Here is a long explanation of how it works, step by step.",
        ["Ok.", "Here is a long explanation of how it works, step by step."],
        id="early-cut-only-first",
    ),
]

BOUNDED_CASES = [
    pytest.param(
        "Ok. alpha beta gamma, delta epsilon zeta; eta theta iota kappa",
        {"max_chars": 40},
        ["Ok.", "alpha beta gamma, delta epsilon zeta;", "eta theta iota kappa"],
        id="run-on-clause",
    ),
    pytest.param(
        "Ok. one two three four five — six seven eight nine ten",
        {"max_chars": 40},
        ["Ok.", "one two three four five —", "six seven eight nine ten"],
        id="run-on-dash",
    ),
    pytest.param(
        "Ok. " + "word " * 12,
        {"max_chars": 24},
        ["Ok.", "word word word word word", "word word word word word", "word word"],
        id="run-on-whitespace",
    ),
    pytest.param(
        "x" * 100,
        {"first_max_chars": 30, "max_chars": 40},
        ["x" * 30, "x" * 40, "x" * 30],
        id="hard-split",
    ),
    pytest.param(
        "word " * 30,
        {},
        [("word " * 16).strip(), ("word " * 14).strip()],
        id="first-bound",
    ),
    pytest.param(
        "```\n" + "a = 1\n" * 6 + "```",
        {"first_max_chars": 14, "max_chars": 20},
        ["```\na = 1", "a = 1\na = 1\na = 1", "a = 1\na = 1\n```"],
        id="fence-cut-at-lines",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_examples(text: str, expected: list[str]) -> None:
    assert split_text(text, first_max_chars=200, max_chars=200) == expected
    assert _fed(text, [1] * len(text), first_max_chars=200, max_chars=200) == expected


@pytest.mark.parametrize(("text", "bounds", "expected"), BOUNDED_CASES)
def test_bounds(text: str, bounds: dict[str, int], expected: list[str]) -> None:
    assert split_text(text, **bounds) == expected


def test_a_segment_is_sent_as_soon_as_whitespace_follows() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Hello.") == []
    assert splitter.feed(" Wor") == ["Hello."]
    assert splitter.feed("ld\nA") == ["World"]
    assert splitter.flush() == ["A"]


def test_no_waits_for_the_next_word() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("No. ") == []
    assert splitter.feed("T") == ["No."]
    assert splitter.feed("he end. No. ") == ["The end."]
    assert splitter.flush() == ["No."]


def test_flush_starts_a_new_reply() -> None:
    splitter = SentenceSplitter(first_max_chars=10)
    assert splitter.feed("Hello there. ```\n") == ["Hello", "there."]
    assert splitter.flush() == []
    # first_max_chars again, and the fence the last reply left open does not hold this line break
    assert splitter.feed("a " * 6 + "\n") == ["a a a a a", "a"]


@pytest.mark.parametrize("bounds", [{"first_max_chars": 0}, {"max_chars": 0}])
def test_bounds_must_be_positive(bounds: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="at least one"):
        SentenceSplitter(**bounds)


# Properties: replies built from the pieces the rules are about, with some arbitrary text in between.
PIECES = [
    *("Hello", "world", "it", "Mr.", "dr.", "e.g.", "No.", "no.", "J.", "U.S.", "3.14", "v2.1.0", "example.com"),
    *("1.", "12.", ".", "!", "?", "…", "...", "?!", ",", ";", ":", " — ", " – ", "-", "#", "5"),
    *('"', "'", "“", "”", "’", "(", ")", "]", "**", "_", "`", "``", "```", "```py"),
    *(" ", "  ", "\n", "\r\n", "\n\n", "\t", "x" * 30, "antidisestablishmentarianism"),
    *("the quick brown fox", " and ", "Sure, here it is", "Yes. "),
]
replies = st.lists(st.sampled_from(PIECES) | st.text(max_size=3), min_size=8, max_size=80).map("".join)
bounds = st.fixed_dictionaries({"first_max_chars": st.integers(1, 90), "max_chars": st.integers(1, 150)})


def _fed(text: str, sizes: list[int], **bounds: int) -> list[str]:
    """The segments of `text` fed in pieces of `sizes` (the rest in one last piece), then flushed."""
    splitter = SentenceSplitter(**bounds)
    segments: list[str] = []
    start = 0
    for size in sizes:
        segments += splitter.feed(text[start : start + size])
        start += size
    return segments + splitter.feed(text[start:]) + splitter.flush()


def _squash(text: str) -> str:
    return "".join(c for c in text if not c.isspace())


@settings(deadline=None, max_examples=200)
@given(text=replies, bounds=bounds, sizes=st.lists(st.integers(0, 12), max_size=80))
def test_chunking_does_not_matter(text: str, bounds: dict[str, int], sizes: list[int]) -> None:
    whole = split_text(text, **bounds)
    assert _fed(text, sizes, **bounds) == whole
    assert _fed(text, [1] * len(text), **bounds) == whole


@settings(deadline=None, max_examples=200)
@given(text=replies, bounds=bounds)
def test_nothing_is_lost(text: str, bounds: dict[str, int]) -> None:
    """Without whitespace, the reply is d0 + s1 + d1 + … + sn + dn, where s1 … sn are the segments in order and every
    d (dropped segments) has no letter or digit. The split is forced: a segment's first letter or digit must be the
    reply's next one, so each segment has exactly one place to be checked against."""
    segments = split_text(text, **bounds)
    rest = _squash(text)
    at = 0
    for segment in segments:
        assert segment == segment.strip()
        assert any(c.isalnum() for c in segment), segment
        piece = _squash(segment)
        lead = next(i for i, c in enumerate(piece) if c.isalnum())
        first = next((i for i in range(at, len(rest)) if rest[i].isalnum()), len(rest))
        start = first - lead
        assert start >= at, (segment, rest[at:])
        assert rest[start : start + len(piece)] == piece, (segment, rest[at:])
        at = start + len(piece)
    assert not any(c.isalnum() for c in rest[at:]), rest[at:]


@settings(deadline=None, max_examples=200)
@given(text=replies, bounds=bounds)
def test_segments_keep_to_their_bounds(text: str, bounds: dict[str, int]) -> None:
    """The first segment is at most first_max_chars long, every later one at most max_chars."""
    first, *later = split_text(text, **bounds) or [""]
    assert len(first) <= bounds["first_max_chars"], first
    assert all(len(segment) <= bounds["max_chars"] for segment in later), later
