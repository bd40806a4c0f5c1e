"""Accounts: sign-up and sign-in over the API, and passwords never kept or logged in clear."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.apps import lenient_client, make_settings, running, serve
from tests.helpers import PASSWORD, assert_problem, bearer, login, parse_time, register
from webapp.config import Settings
from webapp.models import User
from webapp.services.runtime import Runtime

# --- sign-up and sign-in ---------------------------------------------------------------------------------------------


async def test_register_answers_the_user_and_a_bearer_token(anon: httpx.AsyncClient, settings: Settings) -> None:
    password = "Registration-Pa55word"
    response = await register(anon, "ada@example.com", password, display_name="Ada Lovelace")
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"user", "access_token", "token_type", "expires_at"}
    assert body["token_type"] == "bearer"
    assert set(body["user"]) == {"id", "email", "display_name", "created_at"}
    assert body["user"]["email"] == "ada@example.com" and body["user"]["display_name"] == "Ada Lovelace"
    expected_expiry = datetime.now(UTC) + timedelta(hours=settings.access_token_hours)
    assert abs(parse_time(body["expires_at"]) - expected_expiry) < timedelta(minutes=1)

    me = await anon.get("/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200 and me.json() == body["user"]

    signed_in = await login(anon, "ada@example.com", password)
    assert signed_in.status_code == 200, signed_in.text
    assert set(signed_in.json()) == {"access_token", "token_type", "expires_at"}
    assert signed_in.json()["token_type"] == "bearer"
    assert parse_time(signed_in.json()["expires_at"]) > datetime.now(UTC)
    again = await anon.get("/me", headers=bearer(signed_in.json()["access_token"]))
    assert again.status_code == 200 and again.json()["id"] == body["user"]["id"]

    for answer in (response, me, signed_in, again):
        assert password not in answer.text and "password" not in answer.text


async def test_display_name_defaults_to_the_email_name(anon: httpx.AsyncClient) -> None:
    response = await register(anon, "grace@example.com")
    assert response.status_code == 201 and response.json()["user"]["display_name"] == "grace"


async def test_email_is_unique_whatever_its_case(anon: httpx.AsyncClient) -> None:
    assert (await register(anon, "Ada@Example.com")).status_code == 201
    taken = await register(anon, "ada@example.com", "another password")
    assert_problem(taken, 409, "email_taken")
    assert_problem(await register(anon, "ADA@EXAMPLE.COM"), 409, "email_taken")
    # Sign-in is case-insensitive too, and still reaches the first account.
    signed_in = await login(anon, "aDa@example.COM")
    assert signed_in.status_code == 200
    assert_problem(await login(anon, "ada@example.com", "another password"), 401, "invalid_credentials")


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email", "password": PASSWORD},
        {"email": "ada@example", "password": PASSWORD},
        {"email": "", "password": PASSWORD},
        {"email": "ada@example.com", "password": "7 chars"},
        {"email": "ada@example.com"},
        {"password": PASSWORD},
        {"email": "ada@example.com", "password": PASSWORD, "is_admin": True},
    ],
    ids=["no-at", "no-dot", "empty-email", "short-password", "no-password", "no-email", "unknown-field"],
)
async def test_register_rejects_invalid_bodies(anon: httpx.AsyncClient, runtime: Runtime, body: dict[str, Any]) -> None:
    response = await anon.post("/auth/register", json=body)
    assert_problem(response, 422, "validation_failed")
    assert response.json()["errors"]
    assert PASSWORD not in response.text and "7 chars" not in response.text  # the input is not echoed back
    async with runtime.db.read() as db:
        assert await db.scalar(select(func.count()).select_from(User)) == 0


async def test_wrong_password_and_unknown_email_look_the_same(
    client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    wrong_password = await login(anon, "owner@example.com", "not the password")
    unknown_email = await login(anon, "nobody@example.com", PASSWORD)
    first = assert_problem(wrong_password, 401, "invalid_credentials")
    second = assert_problem(unknown_email, 401, "invalid_credentials")
    assert first == second  # same title and detail: nothing says which of the two was wrong
    assert wrong_password.headers["www-authenticate"] == unknown_email.headers["www-authenticate"]


async def test_me_is_the_signed_in_account(client: httpx.AsyncClient) -> None:
    response = await client.get("/me")
    assert response.status_code == 200
    assert response.json()["email"] == "owner@example.com"


async def test_signup_can_be_closed_after_the_first_account(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, allow_signup=False)
    async with serve(settings, signed_in=False) as anon:
        assert (await register(anon, "owner@example.com")).status_code == 201  # the first one always
        assert_problem(await register(anon, "second@example.com"), 403, "signup_disabled")
        assert_problem(await login(anon, "second@example.com"), 401, "invalid_credentials")  # nothing was made
        assert (await login(anon, "owner@example.com")).status_code == 200


async def test_concurrent_sign_ups_with_one_email_make_one_account(app: FastAPI, runtime: Runtime) -> None:
    async with lenient_client(app) as http:
        answers = await asyncio.gather(*(register(http, "Ada@Example.com") for _ in range(4)))
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409], [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 409:
            assert_problem(answer, 409, "email_taken")
    async with runtime.db.read() as db:
        assert await db.scalar(select(func.count()).select_from(User)) == 1


async def test_concurrent_first_sign_ups_on_a_closed_server_make_one_account(database_url: str, tmp_path: Path) -> None:
    async with running(make_settings(database_url, tmp_path, allow_signup=False)) as app, lenient_client(app) as http:
        answers = await asyncio.gather(*(register(http, f"first{n}@example.com") for n in range(4)))
        assert sorted(a.status_code for a in answers) == [201, 403, 403, 403], [a.text for a in answers]
        runtime: Runtime = app.state.runtime
        async with runtime.db.read() as db:
            assert await db.scalar(select(func.count()).select_from(User)) == 1


# --- passwords are never kept or logged in clear ---------------------------------------------------------------------


async def test_password_is_stored_as_an_argon2id_hash(anon: httpx.AsyncClient, runtime: Runtime) -> None:
    password = "Stored-Pa55word-42"
    assert (await register(anon, "ada@example.com", password)).status_code == 201
    async with runtime.db.read() as db:
        user = await db.scalar(select(User).where(User.email == "ada@example.com"))
    assert user is not None
    assert user.password_hash.startswith("$argon2id$"), user.password_hash
    assert password not in user.password_hash
    assert PasswordHasher().verify(user.password_hash, password)  # a real hash of this password, not a placeholder
    assert password not in repr(vars(user))


async def test_passwords_never_reach_the_logs(
    anon: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, runtime: Runtime
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")  # SQL statements with their parameters, too
    password, wrong = "Logged-Pa55word-xyzzy", "Wrong-Pa55word-plugh"
    assert (await register(anon, "ada@example.com", password)).status_code == 201
    assert (await login(anon, "ada@example.com", password)).status_code == 200
    assert (await login(anon, "ada@example.com", wrong)).status_code == 401
    assert (await anon.post("/auth/register", json={"email": "bad", "password": password})).status_code == 422
    # The capture works: the INSERT of the account, with its (hashed) password, was logged.
    assert any("$argon2id$" in record.getMessage() for record in caplog.records)
    for record in caplog.records:
        text = record.getMessage() + repr(record.args) + repr(record.__dict__)
        assert password not in text and wrong not in text, record
