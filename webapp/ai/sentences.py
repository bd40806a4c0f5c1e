"""Cut a streamed reply into segments for text-to-speech, each as soon as it is complete.

A voice reply arrives from the chat model a few characters at a time. Speaking each sentence as soon as it ends lets
the user hear the start while the model still writes the rest; the first segment is kept short for the same reason.

`SentenceSplitter` reads one character at a time and decides every boundary from the characters already read, never
from where one streamed piece ended and the next began: the same reply gives the same segments however it was
chunked. It holds no more text than one segment, so a character costs the same early or late in a long reply, and
`feed` costs O(len(delta)).
"""

from __future__ import annotations

from bisect import bisect_right

FIRST_MIN_CHARS = 25
"""The first segment already ends at a clause boundary ("Sure, here is how it works, step by step") once it is this
long, so the first audio starts early."""

ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "a.m", "p.m", "no", "approx"}
)
"""Words (lower case, without their last full stop) whose full stop ends no sentence."""

BEFORE_NUMBER = frozenset({"no"})
"""Abbreviations that are also ordinary words ("The answer is no."): one of these followed by whitespace ends a
sentence unless the next word starts with a digit or "#" ("No. 5"), so its end waits for that word (or `flush`)."""

TERMINALS = ".!?…"
CLOSERS = "\"'”’)]*_"  # `*` and `_`: markdown emphasis closed after the full stop, "**Done.**"
OPENERS = "\"'“‘([*_"  # stripped from a word before it is compared with ABBREVIATIONS
CLAUSE_ENDS = ",;:"
DASHES = "—–"
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # those of str.splitlines


def _is_initials(word: str) -> bool:
    """A single letter ("J" of "J. R. R. Tolkien"), or single letters joined by full stops ("U.S")."""
    return all(len(part) == 1 and part.isalpha() for part in word.split("."))


def _speakable(text: str) -> bool:
    return any(c.isalnum() for c in text)


class SentenceSplitter:
    """Cuts a reply, fed as it streams, into segments to speak one by one.

    A segment ends after . ! ? … (or a run of them, then closing quotes or brackets) once whitespace follows, and at
    every line break. Abbreviations, initials and the number of a numbered list item end nothing. Inside a ``` fence
    only the closing line ends the segment; inside an inline `code` span nothing ends. Text that runs on past the
    bound (`first_max_chars` for the first segment, `max_chars` after) is cut at its last clause boundary, else its
    last whitespace, else at the bound. Segments are stripped; one with no letter or digit is dropped.
    """

    def __init__(self, *, first_max_chars: int = 80, max_chars: int = 240) -> None:
        if first_max_chars < 1 or max_chars < 1:
            raise ValueError("segment bounds must be at least one character")
        self._first_max = first_max_chars
        self._max = max_chars
        self._reset()

    def _reset(self) -> None:
        # Positions are absolute (characters read since the reply began), so cutting the held text moves none.
        self._seg: list[str] = []  # the segment being read; never starts with whitespace
        self._base = 0  # position of _seg[0]
        self._first = True  # no segment has been returned yet
        self._soft: list[int] = []  # where to cut first: clause boundaries, or line breaks inside a fence
        self._spaces: list[int] = []  # where to cut next: whitespace after a word
        self._fence = 0  # backticks that opened the fenced block we are in, or 0
        self._inline = 0  # backticks that opened the inline code span we are in, or 0
        self._ticks = 0  # backticks in the run being read (its meaning is known at its end)
        self._ticks_open_line = False  # that run is the first thing on its line
        self._blank_line = True  # only whitespace so far on this line
        self._line_words = 0  # words begun on this line
        self._word_start = 0  # position of the current word
        self._run_start = -1  # position of the terminal punctuation run that may end a sentence, or -1
        self._closed = False  # closing quotes or brackets followed that run
        self._held = -1  # position right after a "No." whose end waits for the next word, or -1

    def feed(self, delta: str) -> list[str]:
        """The segments that `delta`, the next piece of the reply, completes, in order; often none."""
        out: list[str] = []
        for ch in delta:
            self._push(ch, out)
        return out

    def flush(self) -> list[str]:
        """Whatever remains at the end of the reply, as segments; the splitter is then ready for another reply."""
        out: list[str] = []
        self._emit_until(self._base + len(self._seg), out)
        self._reset()
        return out

    def _push(self, ch: str, out: list[str]) -> None:
        if self._ticks and ch != "`":
            self._end_backtick_run()
        if ch in LINE_BREAKS:
            self._line_break(ch, out)
        elif ch.isspace():
            self._space(ch, out)
        else:
            self._visible(ch, out)

    def _end_backtick_run(self) -> None:
        n, self._ticks = self._ticks, 0
        if self._fence:
            if self._ticks_open_line and n >= self._fence:
                self._fence = 0
        elif self._inline:
            if n == self._inline:
                self._inline = 0
        elif self._ticks_open_line and n >= 3:
            self._fence = n
        else:
            self._inline = n

    def _line_break(self, ch: str, out: list[str]) -> None:
        self._blank_line = True
        self._line_words = 0
        self._run_start = -1
        if self._fence:
            if self._seg:
                self._soft.append(self._base + len(self._seg))
            self._append(ch, out)
            return
        self._inline = 0  # an unclosed backtick silences no more than its line
        self._held = -1
        self._emit_until(self._base + len(self._seg), out)

    def _space(self, ch: str, out: list[str]) -> None:
        seg = self._seg
        if self._run_start >= 0:
            held = self._sentence_end()
            self._run_start = -1
            if held is None:
                self._emit_until(self._base + len(seg), out)
                return
            if held:
                self._held = self._base + len(seg)
        elif (
            seg
            and not (self._fence or self._inline)
            and (seg[-1] in CLAUSE_ENDS or (seg[-1] in DASHES and len(seg) > 1 and seg[-2].isspace()))
        ):
            if self._first and len(seg) >= FIRST_MIN_CHARS:
                self._emit_until(self._base + len(seg), out)
                return
            self._soft.append(self._base + len(seg))
        self._append(ch, out)

    def _sentence_end(self) -> bool | None:
        """At whitespace after a terminal run: None if it ends the sentence, True if that waits on the next word
        (`BEFORE_NUMBER`), False if it ends nothing (an abbreviation, an initial, a list item's number)."""
        run = self._run_start - self._base
        if self._closed or "".join(self._seg[run:]) != ".":
            return None
        word = "".join(self._seg[max(self._word_start - self._base, 0) : run]).lstrip(OPENERS)
        if not word:
            return None
        lower = word.lower()
        if lower in BEFORE_NUMBER:
            return True
        if lower in ABBREVIATIONS or _is_initials(word) or (word.isdecimal() and self._line_words == 1):
            return False
        return None

    def _visible(self, ch: str, out: list[str]) -> None:
        if self._held >= 0:
            held, self._held = self._held, -1
            if not (ch.isdigit() or ch == "#"):
                self._emit_until(held, out)
        seg = self._seg
        position = self._base + len(seg)
        if not seg or seg[-1].isspace():
            self._word_start = position
            self._line_words += 1
        if ch == "`":
            if not self._ticks:
                self._ticks_open_line = self._blank_line
            self._ticks += 1
            self._run_start = -1
        elif self._fence or self._inline:
            self._run_start = -1
        elif ch in TERMINALS:
            if self._run_start < 0 or self._closed:
                self._run_start = position
                self._closed = False
        elif ch in CLOSERS and self._run_start >= 0:
            self._closed = True
        else:
            self._run_start = -1
        self._blank_line = False
        self._append(ch, out)

    def _append(self, ch: str, out: list[str]) -> None:
        """Hold `ch` (whitespace only inside a segment), then cut while the held text is past the bound."""
        seg = self._seg
        if ch.isspace():
            if not seg:
                return
            if not seg[-1].isspace():
                self._spaces.append(self._base + len(seg))
        seg.append(ch)
        bound = self._first_max if self._first else self._max
        while len(seg) > bound:
            limit = self._base + bound
            cut = limit
            for candidates in (self._soft, self._spaces):
                i = bisect_right(candidates, limit)
                if i:
                    cut = candidates[i - 1]
                    break
            self._emit_until(cut, out)
            bound = self._first_max if self._first else self._max

    def _emit_until(self, position: int, out: list[str]) -> None:
        """Return the held text before `position` as a segment (unless it has nothing to say) and drop it."""
        seg = self._seg
        n = position - self._base
        text = "".join(seg[:n]).strip()
        while n < len(seg) and seg[n].isspace():
            n += 1
        del seg[:n]
        self._base += n
        for candidates in (self._soft, self._spaces):
            del candidates[: bisect_right(candidates, self._base)]
        if self._run_start < self._base:
            self._run_start = -1
        if self._held <= self._base:
            self._held = -1
        if _speakable(text):
            out.append(text)
            self._first = False


def split_text(text: str, **bounds: int) -> list[str]:
    """All the segments of a whole reply (`bounds`: those of `SentenceSplitter`)."""
    splitter = SentenceSplitter(**bounds)
    return splitter.feed(text) + splitter.flush()
