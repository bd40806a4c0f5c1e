"""The baseline for `bench.chat_overhead`: a bare FastAPI route making the same SDK call Parley makes, storing nothing.

Serve it with `BENCH_UPSTREAM=http://127.0.0.1:PORT/v1 uvicorn bench.baseline_app:app`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from openai import AsyncOpenAI, DefaultAioHttpClient
from pydantic import BaseModel

MODEL = os.environ.get("BENCH_MODEL", "gpt-5.4-mini")
SYSTEM_PROMPT = os.environ.get("BENCH_SYSTEM_PROMPT", "You are a helpful assistant. Be brief.")


class ChatIn(BaseModel):
    content: str


class ChatOut(BaseModel):
    reply: str


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    upstream = os.environ["BENCH_UPSTREAM"]
    client = AsyncOpenAI(api_key="sk-bench", base_url=upstream, http_client=DefaultAioHttpClient())
    app.state.client = client
    try:
        yield
    finally:
        await client.close()


app = FastAPI(lifespan=lifespan)


@app.post("/chat")
async def chat(data: ChatIn, request: Request) -> ChatOut:
    client: AsyncOpenAI = request.app.state.client
    completion = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": data.content}],
    )
    return ChatOut(reply=completion.choices[0].message.content or "")


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
