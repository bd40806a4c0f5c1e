"""Geometry for the small inline-SVG charts of the pages: a voice reply's stage bar (`_timings.html`) and an agent's
last 30 days (`_activity.html`). The CSP allows no inline styles, so positions are SVG attributes computed here and
colours are classes in app.css."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from webapp.services.stats import DayActivity

BAR_STAGES = (("transcribing", "transcribe"), ("thinking", "think"), ("speaking", "speak"))
"""`timings_ms` keys of a voice turn's consecutive stages, and what the bar calls them."""


def duration(ms: float | None) -> str:
    """`420 ms`, `1.3 s`, `12 s`: short enough for a caption."""
    if ms is None:
        return "–"
    if ms < 1000:
        return f"{round(ms)} ms"
    return f"{ms / 1000:.1f} s" if ms < 10_000 else f"{round(ms / 1000)} s"


@dataclass(frozen=True, slots=True)
class Stage:
    key: str
    label: str
    ms: int
    x: float
    """Start, in percent of the bar."""
    width: float


@dataclass(frozen=True, slots=True)
class VoiceTimeline:
    stages: list[Stage]
    first_audio_ms: int | None
    first_audio_x: float | None
    total_ms: int

    @property
    def summary(self) -> str:
        parts = [f"{stage.label} {duration(stage.ms)}" for stage in self.stages]
        if self.first_audio_ms is not None:
            parts.append(f"first audio after {duration(self.first_audio_ms)}")
        return ", ".join(parts)


def voice_timeline(timings: Mapping[str, int] | None) -> VoiceTimeline | None:
    """The stage bar of a voice reply from its turn's `timings_ms`: transcribe, think and speak one after another,
    first audio as a mark (it counts from the end of the upload); None when nothing was timed."""
    if not timings:
        return None
    timed = [(key, label, max(int(timings[key]), 0)) for key, label in BAR_STAGES if key in timings]
    if not timed:
        return None
    total = sum(ms for _, _, ms in timed)
    first_audio = timings.get("first_audio")
    span = max(total, first_audio or 0, 1)
    stages, start = [], 0
    for key, label, ms in timed:
        stages.append(
            Stage(key=key, label=label, ms=ms, x=round(100 * start / span, 2), width=round(100 * ms / span, 2))
        )
        start += ms
    mark = None if first_audio is None else round(min(100 * first_audio / span, 99.5), 2)
    return VoiceTimeline(stages=stages, first_audio_ms=first_audio, first_audio_x=mark, total_ms=total)


@dataclass(frozen=True, slots=True)
class DayBar:
    activity: DayActivity
    x: float
    """Left edge of the turns bar, in chart units."""
    center: float
    height: float
    """Of the turns bar, in chart units."""
    median_y: float | None
    """Where the median latency's dot sits (None: no complete reply that day)."""

    @property
    def label(self) -> str:
        turns = self.activity.turns
        median = self.activity.median_latency_ms
        text = f"{self.activity.day.isoformat()}: {turns} turn{'' if turns == 1 else 's'}"
        return text + (f", median latency {duration(median)}" if median is not None else "")


@dataclass(frozen=True, slots=True)
class ActivityChart:
    bars: list[DayBar]
    width: int
    height: int
    slot: float
    """The width of one day."""
    bar_width: float
    max_turns: int
    max_median_ms: int | None
    total_turns: int
    median_line: str
    """The median latency as an SVG polyline's `points`, through the days that have one."""

    @property
    def summary(self) -> str:
        days = len(self.bars)
        if not self.total_turns:
            return f"No turns in the last {days} days."
        busiest = max(self.bars, key=lambda bar: bar.activity.turns)
        return (
            f"{self.total_turns} turns in the last {days} days; busiest {busiest.activity.day.isoformat()} "
            f"with {busiest.activity.turns}."
        )


CHART_WIDTH, CHART_HEIGHT = 300, 50


def activity_chart(days: Sequence[DayActivity]) -> ActivityChart:
    """Turns per day as bars (left scale) and the median latency as dots joined by a line (its own scale)."""
    max_turns = max((day.turns for day in days), default=0)
    medians = [day.median_latency_ms for day in days if day.median_latency_ms is not None]
    max_median = max(medians, default=None)
    slot = CHART_WIDTH / max(len(days), 1)
    plot = CHART_HEIGHT - 4  # room for the dots at the top
    bars = []
    for index, day in enumerate(days):
        height = round(plot * day.turns / max_turns, 2) if max_turns else 0.0
        median_y = (
            round(CHART_HEIGHT - 2 - (plot - 2) * day.median_latency_ms / max_median, 2)
            if day.median_latency_ms is not None and max_median
            else None
        )
        left = index * slot
        bars.append(
            DayBar(
                activity=day,
                x=round(left + slot * 0.15, 2),
                center=round(left + slot / 2, 2),
                height=height,
                median_y=median_y,
            )
        )
    points = " ".join(f"{bar.center:g},{bar.median_y:g}" for bar in bars if bar.median_y is not None)
    return ActivityChart(
        bars=bars,
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
        slot=round(slot, 2),
        bar_width=round(slot * 0.7, 2),
        max_turns=max_turns,
        max_median_ms=max_median,
        total_turns=sum(day.turns for day in days),
        median_line=points,
    )
