"""Chat sessions and their messages."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, status
from fastapi.responses import Response
from sse_starlette import EventSourceResponse

from webapp.deps import AUTHENTICATED, PageDep, PrincipalDep, RuntimeDep
from webapp.errors import (
    NoTurnRunning,
    RateLimited,
    SessionBusy,
    SessionNotFound,
    UpstreamAuthFailed,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from webapp.http.openapi import TOKEN_EVENT, problems, schema_ref, sse_response
from webapp.http.sse import turn_events
from webapp.schemas import MessageCreate, MessageRead, Page, SessionRead, SessionUpdate, TurnRead
from webapp.services import messages, sessions, turns

router = APIRouter(tags=["sessions"], dependencies=AUTHENTICATED)
NOT_FOUND = problems(SessionNotFound)


@router.get("/sessions/{session_id}", summary="Get a session", responses=NOT_FOUND)
async def get_session(session_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> SessionRead:
    """Get one session, with its agent's id and name."""
    return await sessions.get(runtime, owner_id=principal.user_id, session_id=session_id)


@router.patch("/sessions/{session_id}", summary="Rename a session", responses=NOT_FOUND)
async def rename_session(
    session_id: str, data: SessionUpdate, runtime: RuntimeDep, principal: PrincipalDep
) -> SessionRead:
    """Rename a session."""
    return await sessions.rename(runtime, owner_id=principal.user_id, session_id=session_id, title=data.title)


@router.delete(
    "/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a session", responses=NOT_FOUND
)
async def delete_session(session_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> None:
    """Delete a session with its messages and audio."""
    await sessions.delete_session(runtime, owner_id=principal.user_id, session_id=session_id)


@router.get("/sessions/{session_id}/messages", tags=["messages"], summary="List messages", responses=NOT_FOUND)
async def list_messages(
    session_id: str, runtime: RuntimeDep, principal: PrincipalDep, page: PageDep
) -> Page[MessageRead]:
    """The session's history, oldest first."""
    return await messages.list_messages(
        runtime, owner_id=principal.user_id, session_id=session_id, limit=page.limit, cursor=page.cursor
    )


@router.post(
    "/sessions/{session_id}/messages",
    status_code=status.HTTP_201_CREATED,
    tags=["messages"],
    summary="Send a message",
    responses={
        201: {
            "model": TurnRead,
            **sse_response(
                "Both stored messages. With `Accept: text/event-stream`: `token` events, then one `done` event (this "
                "same JSON), one `cancelled` event (the same, when the turn was stopped: the reply so far is stored "
                "with status `cancelled`) or one `error` event (a problem document; the failed reply is stored all "
                "the same).",
                {
                    "token": TOKEN_EVENT,
                    "done": schema_ref("TurnRead"),
                    "cancelled": schema_ref("TurnRead"),
                    "error": schema_ref("Problem"),
                },
            ),
        },
        **problems(
            SessionNotFound,
            SessionBusy,
            RateLimited,
            UpstreamUnavailable,
            UpstreamRejected,
            UpstreamAuthFailed,
            UpstreamRateLimited,
            UpstreamTimeout,
        ),
    },
)
async def send_message(
    session_id: str,
    data: MessageCreate,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    accept: Annotated[str, Header()] = "application/json",
) -> Any:
    """Send a message and get the agent's reply (streamed with `Accept: text/event-stream`)."""
    # No request transaction here: the turn opens its own short ones around the call to the model.
    stream = "text/event-stream" in accept
    turn = await turns.send(
        runtime, owner_id=principal.user_id, session_id=session_id, content=data.content, stream=stream
    )
    if stream:
        await turn.user_message()  # errors before anything is stored keep their own status (404, 409)
        events = turn_events(turn.events(), done=lambda done: done.model_dump(mode="json"))
        return EventSourceResponse(events, status_code=status.HTTP_201_CREATED, ping=15)
    result: TurnRead = await turn.result()
    return Response(result.model_dump_json(), status_code=status.HTTP_201_CREATED, media_type="application/json")


@router.post(
    "/sessions/{session_id}/cancel",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Stop the running turn",
    responses=problems(SessionNotFound, NoTurnRunning),
)
async def cancel_turn(session_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> None:
    """Stop whatever turn is running in the session, typed or spoken (the stop button). The user's message and the
    reply written so far (status `cancelled`) stay in the history; a streamed reply ends with a `cancelled` event.
    The session is free for the next turn when this answers."""
    await turns.stop(runtime, owner_id=principal.user_id, session_id=session_id)
