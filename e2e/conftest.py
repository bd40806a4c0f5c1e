"""Browser tests: one real Parley server (offline provider) and one headless Chromium with a fake microphone.

The microphone plays `tests/data/question.wav` ("one two three four five") padded with silence, once per capture.
Contexts get the microphone permission explicitly; a context without it is refused, as a real user who clicks
"Block" would be (so Chromium runs without `--use-fake-ui-for-media-stream`, which would grant everything).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, ViewportSize, expect, sync_playwright

from e2e.server import REPO, Server, chromium_args, make_fake_mic_wav, require_chromium, running_server
from tests.conftest import fake_openai_server, upstream  # noqa: F401  (fixtures: one fake upstream per run)
from tests.fake_openai import FakeOpenAI

ARTIFACTS = REPO / "test-results"


def save_screenshot(page: Page, name: str, *, full_page: bool = False) -> None:
    """The page as `name`.png in test-results/, or in `E2E_SCREENSHOTS` (`E2E_SCREENSHOTS=docs` refreshes the
    screenshots committed under docs/)."""
    folder = Path(os.environ.get("E2E_SCREENSHOTS") or ARTIFACTS)
    folder = folder if folder.is_absolute() else REPO / folder
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=full_page)


VIEWPORT: ViewportSize = {"width": 1280, "height": 800}

expect.set_options(timeout=10_000)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Keep each phase's report on the item, so fixtures can tell whether the test failed.
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("server")) as server:
        yield server


@pytest.fixture(scope="session")
def fake_mic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fake_mic_wav(tmp_path_factory.mktemp("mic") / "question-padded.wav")


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def browser(playwright: Playwright, fake_mic: Path) -> Iterator[Browser]:
    try:
        executable = require_chromium()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    browser = playwright.chromium.launch(
        executable_path=executable, args=chromium_args(fake_mic=fake_mic, auto_accept_mic=False)
    )
    yield browser
    browser.close()


def open_context(browser: Browser, server: Server, *, microphone: bool) -> BrowserContext:
    context = browser.new_context(
        base_url=server.base_url, viewport=VIEWPORT, permissions=["microphone"] if microphone else []
    )
    context.set_default_timeout(10_000)
    return context


@pytest.fixture
def context(browser: Browser, server: Server) -> Iterator[BrowserContext]:
    context = open_context(browser, server, microphone=True)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext, server: Server, request: pytest.FixtureRequest) -> Iterator[Page]:
    yield from watched_page(context, server, request)


def watched_page(context: BrowserContext, server: Server, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page whose uncaught script errors fail the test; on failure, a screenshot and the logs are kept."""
    page = context.new_page()
    errors: list[str] = []
    console: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"{error.name}: {error.message}"))
    page.on("console", lambda message: console.append(f"[{message.type}] {message.text}"))
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / f"{request.node.name}.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"\nscreenshot: {shot}\nbrowser console:\n" + "\n".join(console[-30:]))
        print(f"server log:\n{server.log_tail()}")
    page.close()
    assert not errors, f"uncaught errors in the page: {errors}"


# --- the openai provider against the fake upstream (tests/conftest.py's; one server per test module) ---------------


@pytest.fixture(scope="module")
def openai_server(
    tmp_path_factory: pytest.TempPathFactory,
    fake_openai_server: FakeOpenAI,  # noqa: F811  (the fixture imported above)
) -> Iterator[Server]:
    env = {"AI_PROVIDER": "openai", "OPENAI_API_KEY": "sk-e2e", "OPENAI_BASE_URL": fake_openai_server.base_url}
    with running_server(tmp_path_factory.mktemp("openai-server"), extra_env=env) as server:
        yield server
