"""The signed-in home page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from webapp.deps import RuntimeDep
from webapp.pages.rendering import page_principal, render
from webapp.services import accounts, agents

router = APIRouter(include_in_schema=False)


@router.get("/")
async def home(request: Request, runtime: RuntimeDep) -> Response:
    principal = page_principal(request, runtime)
    if principal is None:
        return RedirectResponse("/signin", status_code=303)
    async with runtime.db.read() as db:
        user = await accounts.get_user(db=db, user_id=principal.user_id)
        items, _ = await agents.list_agents(db=db, owner_id=principal.user_id, limit=100, cursor=None)
    return render(request, runtime, "home.html", user=user, agents=items)
