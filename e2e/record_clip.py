"""Record a committed test clip through the chat page: espeak-ng's speech played into Chromium's fake microphone,
recorded by the page's MediaRecorder (webm/opus, as a user's browser sends it), and kept as the server stored it.

Run once, from the repository root: `.venv/bin/python -m e2e.record_clip` (needs Debian's chromium and Playwright,
as scripts/e2e installs them). It writes tests/data/stt/capital-chromium.webm from tests/data/stt/capital.flac; the
recording differs a little from run to run (Opus, timing), so the committed one is the one the tests grade.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import uuid
import wave
from pathlib import Path

import numpy as np
from playwright.sync_api import expect, sync_playwright

from e2e.server import chromium_args, require_chromium, running_server
from tests.stt_clips import BY_NAME, read_pcm

LEAD_SECONDS, TAIL_SECONDS = 0.7, 1.0  # recording starts before the first word and stops after the last


def padded_wav(source: Path, destination: Path) -> float:
    """`source` as a 16-bit mono WAV with silence around it (Chromium's fake device plays WAV only); its seconds."""
    samples, rate = read_pcm(source)
    silence = np.zeros(round(LEAD_SECONDS * rate), "<i2"), np.zeros(round(TAIL_SECONDS * rate), "<i2")
    padded = np.concatenate([silence[0], samples, silence[1]])
    with wave.open(str(destination), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(padded.tobytes())
    return padded.size / rate


def record(source: Path, destination: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="parley-record-") as tmp:
        mic = Path(tmp) / "mic.wav"
        seconds = padded_wav(source, mic)
        # The transcript does not matter here, only the recording: pocketsphinx answers sooner.
        with (
            running_server(Path(tmp) / "server", extra_env={"OFFLINE_STT": "pocketsphinx"}) as server,
            sync_playwright() as playwright,
        ):
            browser = playwright.chromium.launch(
                executable_path=require_chromium(), args=chromium_args(fake_mic=mic, auto_accept_mic=False)
            )
            context = browser.new_context(base_url=server.base_url, permissions=["microphone"])
            page = context.new_page()
            page.goto("/signup")
            page.fill("#email", f"recorder-{uuid.uuid4().hex[:8]}@example.com")
            page.fill("#display_name", "Recorder")
            page.fill("#password", "correct horse battery")
            page.get_by_role("button", name="Create account").click()
            expect(page).to_have_url(re.compile(r"/$"))
            form = page.locator("form#create-agent")
            form.locator("#agent-name").fill("Listener")
            form.locator("#agent-prompt").fill("You listen.")
            form.get_by_role("button", name="Create agent").click()
            page.locator("a.agent-link", has_text="Listener").click()
            page.locator("#new-session").click()
            expect(page.locator("#ptt")).to_be_visible()
            with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/voice")) as sent:
                box = page.locator("#ptt").bounding_box()
                assert box is not None
                page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                page.mouse.down()
                page.wait_for_timeout(round((seconds + 0.3) * 1000))
                page.mouse.up()
            # The page's form answers with the turn's events URL (its body is gone once the page has moved on).
            location = re.fullmatch(r"/voice-turns/([^/]+)/events", sent.value.header_value("location") or "")
            assert sent.value.status == 202 and location, (sent.value.status, sent.value.headers)
            turn_id = location[1]
            for _ in range(200):
                turn = page.request.get(f"/api/v1/voice-turns/{turn_id}").json()
                if turn["user_message_id"]:
                    break
                page.wait_for_timeout(100)
            else:
                raise RuntimeError(f"the turn stored no recording: {turn}")
            audio = page.request.get(f"/api/v1/messages/{turn['user_message_id']}/audio")
            assert audio.ok and audio.headers["content-type"].startswith("audio/webm"), audio.headers
            destination.write_bytes(audio.body())
            print(f"{destination}: {len(audio.body())} bytes, {audio.headers['content-type']}", file=sys.stderr)
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=BY_NAME["capital"].path)
    parser.add_argument("--out", type=Path, default=BY_NAME["capital-chromium"].path)
    args = parser.parse_args()
    record(args.source, args.out)


if __name__ == "__main__":
    main()
