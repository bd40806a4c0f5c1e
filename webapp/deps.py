"""Dependencies as `Annotated` aliases; the `*Dep` loaders fetch a resource or raise its 404.

Every dependency is `async def`, even the trivial ones: FastAPI runs plain functions in a thread pool, which costs a
thread hop per request and lets requests overtake each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from webapp.config import Settings
from webapp.models import Agent, ChatSession
from webapp.services import agents, sessions
from webapp.services.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_db(request: Request, runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    """One transaction per request, committed before the response is sent (a write transaction unless reading)."""
    if request.method in ("GET", "HEAD"):
        async with runtime.db.read() as db:
            yield db
        return
    async with runtime.db.write() as db:
        yield db


DbDep = Annotated[AsyncSession, Depends(get_db, scope="function")]


@dataclass(frozen=True)
class PageParams:
    limit: int
    cursor: str | None


async def get_page_params(
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page.")] = 20,
    cursor: Annotated[str | None, Query(description="`next_cursor` from the previous page.")] = None,
) -> PageParams:
    return PageParams(limit=limit, cursor=cursor)


PageDep = Annotated[PageParams, Depends(get_page_params)]


async def load_agent(db: DbDep, agent_id: Annotated[str, Path()]) -> Agent:
    return await agents.get_agent(db=db, agent_id=agent_id)


AgentDep = Annotated[Agent, Depends(load_agent)]


async def load_chat(db: DbDep, session_id: Annotated[str, Path()]) -> tuple[ChatSession, Agent]:
    return await sessions.get_session(db=db, session_id=session_id)


ChatDep = Annotated[tuple[ChatSession, Agent], Depends(load_chat)]
