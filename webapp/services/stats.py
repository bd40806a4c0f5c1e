"""An agent's activity over the last days: turns per day and the median reply latency (the agent page's chart).

Days are UTC calendar days. Both numbers come from SQL that SQLite and PostgreSQL both run (window functions for the
median), so the answer is one row per day whatever the number of messages: the work stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from webapp.models import ChatSession, Message
from webapp.services.agents import owned_agent
from webapp.services.runtime import Runtime

DAYS = 30


@dataclass(frozen=True, slots=True)
class DayActivity:
    day: date
    turns: int
    """Replies the agent gave (or tried to: failed and stopped ones count) that day."""
    median_latency_ms: int | None
    """The median time to a complete reply that day; None when there was none."""


def _utc_day(db: AsyncSession, column: QueryableAttribute[datetime]) -> ColumnElement[str]:
    """`YYYY-MM-DD` of a stored UTC timestamp, in SQL (the one thing the two databases spell differently)."""
    if db.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", column)  # SQLite keeps UTC timestamps as text


async def daily_activity(
    runtime: Runtime, *, owner_id: str, agent_id: str, days: int = DAYS, today: date | None = None
) -> list[DayActivity]:
    """The agent's last `days` UTC days, oldest first, `today` included; a day without turns is there with 0."""
    today = today or datetime.now(UTC).date()
    first = today - timedelta(days=days - 1)
    since = datetime.combine(first, time.min, tzinfo=UTC)
    until = datetime.combine(today + timedelta(days=1), time.min, tzinfo=UTC)
    async with runtime.db.read() as db:
        agent = await owned_agent(db, owner_id=owner_id, agent_id=agent_id)
        day = _utc_day(db, Message.created_at).label("day")
        replies = (
            select(day, Message.latency_ms, Message.status)
            .join(ChatSession, ChatSession.id == Message.session_id)
            .where(
                ChatSession.agent_id == agent.id,
                Message.role == "assistant",
                Message.created_at >= since,
                Message.created_at < until,
            )
            .subquery()
        )
        counted = await db.execute(select(replies.c.day, func.count()).group_by(replies.c.day))
        turns = {str(row[0]): int(row[1]) for row in counted}

        # The median: the middle value (or the mean of the middle two) of each day's ordered latencies.
        timed = select(
            replies.c.day,
            replies.c.latency_ms,
            func.row_number().over(partition_by=replies.c.day, order_by=replies.c.latency_ms).label("n"),
            func.count().over(partition_by=replies.c.day).label("total"),
        ).where(replies.c.status == "complete", replies.c.latency_ms.is_not(None))
        ranked = timed.subquery()
        middle = await db.execute(
            select(ranked.c.day, func.avg(ranked.c.latency_ms))
            .where(ranked.c.n.in_([(ranked.c.total + 1) // 2, (ranked.c.total + 2) // 2]))
            .group_by(ranked.c.day)
        )
        medians = {str(row[0]): round(float(row[1])) for row in middle}

    every_day = (first + timedelta(days=offset) for offset in range(days))
    return [
        DayActivity(
            day=moment, turns=turns.get(moment.isoformat(), 0), median_latency_ms=medians.get(moment.isoformat())
        )
        for moment in every_day
    ]
