"""Liveness and readiness probes (outside `/api/v1`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from webapp.deps import RuntimeDep
from webapp.errors import NotReady
from webapp.problems import PROBLEM_SCHEMA, problem_response
from webapp.services import health

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process is serving requests."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {"status": "ready", "database": "ok", "schema": "current", "provider": "offline"}
                }
            }
        },
        503: {"description": "Not ready", "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}}},
    },
)
async def readyz(runtime: RuntimeDep) -> Any:
    """Readiness: the database answers and its schema is current."""
    problem = await health.check(runtime)
    if problem is not None:
        return problem_response(NotReady(problem))
    return JSONResponse({"status": "ready", "database": "ok", "schema": "current", "provider": runtime.provider.name})
