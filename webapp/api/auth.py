"""Accounts: register, sign in, who am I, and API keys."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from webapp.deps import AUTHENTICATED, PrincipalDep, RuntimeDep, client_address
from webapp.errors import ApiKeyNotFound, EmailTaken, InvalidCredentials, RateLimited, SignupDisabled
from webapp.http.openapi import problems
from webapp.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    LoginRequest,
    Page,
    RegisterRead,
    RegisterRequest,
    TokenRead,
    UserRead,
)
from webapp.services import accounts

public = APIRouter(tags=["accounts"])
router = APIRouter(tags=["accounts"], dependencies=AUTHENTICATED)


@public.post(
    "/auth/register",
    status_code=status.HTTP_201_CREATED,
    summary="Create an account",
    responses=problems(SignupDisabled, EmailTaken),
)
async def register(data: RegisterRequest, runtime: RuntimeDep) -> RegisterRead:
    """Create an account (the first one always; later ones while `ALLOW_SIGNUP` is true) and sign in."""
    return await accounts.sign_up(runtime, data=data)


@public.post("/auth/login", summary="Sign in", responses=problems(InvalidCredentials, RateLimited))
async def login(data: LoginRequest, request: Request, runtime: RuntimeDep) -> TokenRead:
    """Exchange email and password for a bearer access token."""
    return await accounts.log_in(runtime, email=data.email, password=data.password, address=client_address(request))


@router.get("/me", summary="Who am I")
async def get_me(principal: PrincipalDep, runtime: RuntimeDep) -> UserRead:
    """The signed-in account."""
    return await accounts.me(runtime, user_id=principal.user_id)


@router.post("/api-keys", status_code=status.HTTP_201_CREATED, summary="Create an API key")
async def create_api_key(data: ApiKeyCreate, principal: PrincipalDep, runtime: RuntimeDep) -> ApiKeyCreated:
    """Create an API key; its secret is in this response only."""
    return await accounts.create_api_key(runtime, user_id=principal.user_id, name=data.name)


@router.get("/api-keys", summary="List API keys")
async def list_api_keys(principal: PrincipalDep, runtime: RuntimeDep) -> Page[ApiKeyRead]:
    """Your API keys, oldest first (never their secrets); all on one page."""
    keys = await accounts.list_api_keys(runtime, user_id=principal.user_id)
    return Page[ApiKeyRead](items=keys, next_cursor=None)


@router.delete(
    "/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an API key",
    responses=problems(ApiKeyNotFound),
)
async def delete_api_key(key_id: str, principal: PrincipalDep, runtime: RuntimeDep) -> None:
    """Revoke an API key at once."""
    await accounts.delete_api_key(runtime, user_id=principal.user_id, key_id=key_id)
