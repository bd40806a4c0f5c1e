"""Liveness and readiness probes (outside the API prefix)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from webapp.deps import RuntimeDep
from webapp.errors import NotReady
from webapp.http.openapi import problems
from webapp.http.problems import problem_response
from webapp.schemas import Liveness, Readiness
from webapp.services import health

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> Liveness:
    """Liveness: the process is serving requests."""
    return Liveness(status="ok")


@router.get(
    "/readyz",
    summary="Readiness",
    response_model=Readiness,
    responses=problems(NotReady),
)
async def readyz(runtime: RuntimeDep) -> Any:
    """Readiness: the database answers and its schema is current; which provider and speech recogniser answer."""
    problem = await health.check(runtime)
    if problem is not None:
        return problem_response(NotReady(problem))
    return JSONResponse(
        {
            "status": "ready",
            "database": "ok",
            "schema": "current",
            "provider": runtime.provider.name,
            "speech_recognition": runtime.provider.speech_recognition(),
        }
    )
