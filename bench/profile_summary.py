"""Summarise a py-spy `--format raw` profile (folded stacks): the functions with the most samples.

`python -m bench.profile_summary FILE [--match webapp/ --match sqlalchemy/] [--top 25]`
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::\d+)?\)$")
SHORTEN = re.compile(r"^.*?/(?:site-packages|lib/python3\.\d+)/")


def parse(text: str) -> Iterable[tuple[list[str], int]]:
    """(stack from outermost to innermost frame, samples) for each line of folded stacks."""
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield [frame_name(frame) for frame in stack.split(";")], int(count)


def frame_name(frame: str) -> str:
    """`func (path:line)` as `func (short/path)`: lines merged, site-packages and stdlib prefixes dropped."""
    match = FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = SHORTEN.sub("", match["file"])
    path = re.sub(r"^.*?/(?=webapp/|bench/|tests/)", "", path)
    return f"{match['func']} ({path})"


def tally(text: str) -> tuple[int, Counter[str], Counter[str]]:
    """Total samples, and per function the samples it is on the stack of (inclusive) and on top of (self)."""
    total = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for stack, count in parse(text):
        total += count
        for name in set(stack):
            inclusive[name] += count
        own[stack[-1]] += count
    return total, inclusive, own


def breakdown(text: str, groups: Sequence[tuple[str, Sequence[str]]]) -> str:
    """Each sample counted once, for the first group with a frame whose text contains one of its markers."""
    counts: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not (stack and count.isdigit()):
            continue
        total += int(count)
        label = next((name for name, markers in groups if any(m in stack for m in markers)), "other")
        counts[label] += int(count)
    if not total:
        return "no samples"
    lines = [f"{100 * n / total:6.1f}%  {label}" for label, n in counts.most_common()]
    return "\n".join(["share of samples (each counted for the first group it matches):", *lines])


def summarise(text: str, match: Sequence[str] = (), top: int = 25) -> str:
    total, inclusive, own = tally(text)
    if not total:
        return "no samples"
    lines = [f"{total} samples; % of all samples: inclusive (on the stack) / self (on top)"]
    chosen = [name for name, _ in inclusive.most_common() if not match or any(m in name for m in match)]
    for name in chosen[:top]:
        lines.append(f"{100 * inclusive[name] / total:6.1f}% {100 * own[name] / total:6.1f}%  {name}")
    lines.append("top self time, any code:")
    for name, count in own.most_common(15):
        lines.append(f"{'':7} {100 * count / total:6.1f}%  {name}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_summary", description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--match", action="append", default=[], help="only functions whose path contains this")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    print(summarise(args.file.read_text(), args.match, args.top))


if __name__ == "__main__":
    main()
