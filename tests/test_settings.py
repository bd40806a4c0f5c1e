"""Settings: defaults, provider choice, and a one-line refusal to start on an invalid value."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.databases import ROOT
from webapp.config import Settings


def start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"OPENAI_API_KEY", "AI_PROVIDER"}}
    return subprocess.run(
        [sys.executable, "-c", "import webapp.main"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"OPENAI_TIMEOUT_SECONDS": "soon"}, ["OPENAI_TIMEOUT_SECONDS"]),
        ({"MAX_AUDIO_BYTES": "-1", "TTS_FORMAT": "midi"}, ["MAX_AUDIO_BYTES", "TTS_FORMAT"]),
        ({"AI_PROVIDER": "openai"}, ["OPENAI_API_KEY"]),
    ],
)
def test_invalid_setting_stops_start_up_with_one_line(env: dict[str, str], names: list[str]) -> None:
    result = start(env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("parley: invalid configuration")
    for name in names:
        assert name in lines[0]


def test_unrelated_environment_is_ignored() -> None:
    assert start({"PARLEY_UNKNOWN": "1", "SOMETHING_ELSE": "x"}).returncode == 0


def test_provider_defaults_to_offline_without_a_key_and_openai_with_one() -> None:
    assert Settings(_env_file=None, openai_api_key=None).provider_name == "offline"  # type: ignore[call-arg]
    assert Settings(_env_file=None, openai_api_key="sk-x").provider_name == "openai"  # type: ignore[call-arg]
    forced = Settings(_env_file=None, openai_api_key="sk-x", ai_provider="offline")  # type: ignore[call-arg]
    assert forced.provider_name == "offline"
