"""A captioned walkthrough of Parley in headless Chromium, recorded to `docs/demo.webm`, with README screenshots.

Run: `.venv/bin/python -m e2e.demo [--out docs]`. It starts its own server (offline provider, temp database), drives
the real pages with the fake microphone the e2e tests use, and records with Chromium's screencast (CDP
`Page.startScreencast`) encoded by PyAV, so no ffmpeg binary is needed. The sound track carries what the microphone
heard and every spoken segment of the replies, each placed where it played.

The offline provider answers in one burst and speaks one sentence, which cannot show a reply spoken while it is still
being written. For that part a second server shares the first one's database, media and secret (so the browser stays
signed in; cookies ignore the port) with the openai provider pointed at a labelled stand-in: the test suite's fake
OpenAI-compatible server with a scripted answer written at a model's pace, spoken by the offline voice (espeak-ng).
Before recording, one spoken question goes through the API (`warm_up`), so the video does not show the offline
recogniser's one-time start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
import numpy as np
from playwright.sync_api import BrowserContext, CDPSession, Locator, Page, sync_playwright

from e2e import api_client
from e2e.server import REPO, Server, chromium_args, make_fake_mic_wav, require_chromium, running_server, server_env
from tests.fake_openai import FakeOpenAI
from webapp.audio import encode_pcm

WIDTH, HEIGHT = 1280, 720
FPS = 15
AUDIO_RATE = 48_000
VIDEO_BITRATE = 600_000

# The stand-in model's answer to the microphone's "one two three four five", and its pace (a word every 150 ms).
STAND_IN_TRANSCRIPT = "One, two, three, four, five."
STAND_IN_ANSWER = "You counted to five. Added up, those numbers make fifteen. Shall we count in twos next?"
STAND_IN_WORD_SECONDS = 0.15
STAND_IN_MS = round(STAND_IN_WORD_SECONDS * 1000)
MIC_LEAD, MIC_TAIL = 0.4, 0.4
"""Seconds of silence before and after the microphone's clip (less than in the tests: the video stays short)."""
SHARED_SETTINGS = ("DATABASE_URL", "MEDIA_DIR", "SECRET_KEY_FILE")
"""What the stand-in model's server shares with the offline one: the same accounts, chats and recordings."""

# Captions and a visible pointer (headless screenshots have none); the caption survives navigations.
OVERLAY = """(() => {
  const install = () => {
    if (document.getElementById("demo-caption")) return;
    const caption = document.createElement("div");
    caption.id = "demo-caption";
    // Over the empty middle of the header bar, where it hides nothing the walkthrough shows.
    caption.style.cssText = "position:fixed;left:50%;top:5px;transform:translateX(-50%);z-index:2147483647;" +
      "background:rgba(17,24,39,.92);color:#fff;font:600 21px/1.3 system-ui,sans-serif;padding:6px 22px 7px;" +
      "border-radius:12px;box-shadow:0 6px 20px rgba(0,0,0,.25);pointer-events:none;text-align:center;" +
      "white-space:nowrap;display:none";
    const pointer = document.createElement("div");
    pointer.id = "demo-pointer";
    pointer.style.cssText = "position:fixed;left:-40px;top:-40px;width:22px;height:22px;margin:-11px 0 0 -11px;" +
      "border-radius:50%;background:rgba(239,68,68,.55);border:2px solid #fff;box-shadow:0 0 0 1px rgba(0,0,0,.35);" +
      "z-index:2147483647;pointer-events:none;transition:transform .12s";
    document.body.append(caption, pointer);
    window.__demoCaption = (title, note) => {
      sessionStorage.setItem("demo-caption", JSON.stringify([title, note || ""]));
      caption.replaceChildren(title);
      if (note) {
        const small = document.createElement("div");
        small.style.cssText = "font-weight:400;font-size:14px;opacity:.85";
        small.textContent = note;
        caption.append(small);
      }
      caption.style.display = title ? "" : "none";
    };
    window.__demoOverlay = (visible) => {
      for (const el of [caption, pointer]) el.style.visibility = visible ? "" : "hidden";
    };
    const saved = JSON.parse(sessionStorage.getItem("demo-caption") || '["", ""]');
    window.__demoCaption(saved[0], saved[1]);
    const where = JSON.parse(sessionStorage.getItem("demo-pointer") || "null");
    if (where) { pointer.style.left = where[0] + "px"; pointer.style.top = where[1] + "px"; }
    document.addEventListener("mousemove", (e) => {
      pointer.style.left = e.clientX + "px"; pointer.style.top = e.clientY + "px";
      sessionStorage.setItem("demo-pointer", JSON.stringify([e.clientX, e.clientY]));
    }, true);
    document.addEventListener("mousedown", () => { pointer.style.transform = "scale(.7)"; }, true);
    document.addEventListener("mouseup", () => { pointer.style.transform = ""; }, true);
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", install);
  else install();
})();"""

# Offline replies stream in one burst (no model to wait for). To make the token-by-token rendering visible, the
# demo re-emits the page's streamed response one server-sent event at a time, every `ms` milliseconds.
PACE_STREAM = r"""(ms) => {
  const realFetch = window.fetch;
  window.fetch = async (input, init) => {
    const response = await realFetch(input, init);
    if (!String(input).endsWith("/send") || !response.ok || !response.body) return response;
    const reader = response.body.getReader();
    const decoder = new TextDecoder(), encoder = new TextEncoder();
    const sleep = () => new Promise((resolve) => setTimeout(resolve, ms));
    const paced = new ReadableStream({
      async pull(controller) {
        const { value, done } = await reader.read();
        if (done) { controller.close(); return; }
        for (const piece of decoder.decode(value, { stream: true }).split(/(?<=\r?\n\r?\n)/)) {
          controller.enqueue(encoder.encode(piece));
          await sleep();
        }
      },
    });
    return new Response(paced, { status: response.status, headers: response.headers });
  };
}"""

# Every spoken segment chat.js queues in #reply-queue: its URL, and when it started and stopped playing (the
# browser's wall-clock milliseconds, the screencast's clock).
WATCH_PLAYBACK = """() => {
  window.__heard = [];
  const watch = (audio) => {
    const entry = {src: audio.src, playing: null, stopped: null};
    window.__heard.push(entry);
    audio.addEventListener("playing", () => { entry.playing ??= Date.now(); });
    const stop = () => { if (entry.playing !== null) entry.stopped ??= Date.now(); };
    audio.addEventListener("pause", stop);
    audio.addEventListener("ended", stop);
  };
  new MutationObserver((records) => {
    for (const record of records) {
      for (const node of record.addedNodes) if (node instanceof HTMLAudioElement) watch(node);
    }
  }).observe(document.getElementById("reply-queue"), {childList: true});
}"""

HEARD_ALL = "() => window.__heard.length > 0 && window.__heard.every((entry) => entry.stopped !== null)"


class StandInModel(FakeOpenAI):
    """The fake OpenAI-compatible server with a scripted answer at a model's pace, its speech by espeak-ng."""

    def __init__(self) -> None:
        super().__init__()
        self.transcript = STAND_IN_TRANSCRIPT
        self.reply_text = STAND_IN_ANSWER
        self.transcribe_delay = 0.2
        self.reply_delay = 0.2
        self.token_delay = STAND_IN_WORD_SECONDS

    async def _spoken(self, text: str, fmt: str) -> bytes:
        return await asyncio.to_thread(self._synthesize, text, fmt)

    @staticmethod
    def _synthesize(text: str, fmt: str) -> bytes:
        from webapp.ai.offline_speech import OfflineSynthesizer

        pcm, rate = OfflineSynthesizer().synthesize(text)
        return encode_pcm(pcm, sample_rate=rate, fmt=fmt)


@dataclass
class Screencast:
    """Frames from Chromium's screencast, each with the browser's wall-clock timestamp (seconds)."""

    session: CDPSession
    frames: list[tuple[float, bytes]] = field(default_factory=list)

    def start(self) -> None:
        self.session.on("Page.screencastFrame", self._on_frame)
        self.session.send(
            "Page.startScreencast",
            {"format": "jpeg", "quality": 85, "maxWidth": WIDTH, "maxHeight": HEIGHT, "everyNthFrame": 1},
        )

    def _on_frame(self, event: dict[str, Any]) -> None:
        self.frames.append((float(event["metadata"]["timestamp"]), base64.b64decode(event["data"])))
        self.session.send("Page.screencastFrameAck", {"sessionId": event["sessionId"]})

    def stop(self) -> float:
        self.session.send("Page.stopScreencast")
        return time.time()


@dataclass
class Sound:
    at: float  # wall-clock seconds
    samples: np.ndarray  # float32 mono at AUDIO_RATE


def decode_audio(data: bytes) -> np.ndarray:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
    chunks: list[np.ndarray] = []
    with av.open(io.BytesIO(data), "r") as container:
        for frame in container.decode(audio=0):
            chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(frame)]
    chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def encode_webm(frames: list[tuple[float, bytes]], end: float, sounds: list[Sound], path: Path) -> float:
    """VP8 video at a constant FPS (each screencast frame held until the next) and an Opus sound track."""
    if not frames:
        raise RuntimeError("the screencast produced no frames")
    origin = frames[0][0]
    duration = end - origin
    decoder = av.CodecContext.create("mjpeg", "r")
    scaler = av.video.reformatter.VideoReformatter()
    with av.open(str(path), "w", format="webm") as out:
        video = out.add_stream("libvpx", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.bit_rate = VIDEO_BITRATE
        video.codec_context.gop_size = FPS * 10  # mostly still frames: rare keyframes keep the file small
        video.options = {"quality": "good", "cpu-used": "8", "crf": "16"}
        audio = out.add_stream("libopus", rate=AUDIO_RATE, layout="mono")
        audio.bit_rate = 48_000

        track = np.zeros(int(duration * AUDIO_RATE) + AUDIO_RATE, np.float32)
        for sound in sounds:
            start = max(0, int((sound.at - origin) * AUDIO_RATE))
            piece = sound.samples[: max(0, len(track) - start)]
            track[start : start + len(piece)] += piece
        track = np.clip(track, -1.0, 1.0)
        step = 960  # 20 ms, the Opus frame size
        for index in range(0, len(track), step):
            chunk = track[index : index + step]
            if len(chunk) < step:
                chunk = np.pad(chunk, (0, step - len(chunk)))
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = AUDIO_RATE
            frame.pts = index
            frame.time_base = Fraction(1, AUDIO_RATE)
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))

        count = 0
        for index, (_, jpeg) in enumerate(frames):
            # JPEG uses the full 0-255 range, video the 16-235 one: without the conversion light greys turn white.
            image = scaler.reformat(
                decoder.decode(av.Packet(jpeg))[0],
                width=WIDTH,
                height=HEIGHT,
                format="yuv420p",
                src_color_range="JPEG",
                dst_color_range="MPEG",
            )
            until = frames[index + 1][0] if index + 1 < len(frames) else end
            image.pict_type = av.video.frame.PictureType.NONE  # a decoded JPEG says "I": do not force keyframes
            while count / FPS < until - origin:
                image.pts = count
                out.mux(video.encode(image))
                count += 1
        out.mux(video.encode(None))
    return duration


class Walkthrough:
    def __init__(self, page: Page, context: BrowserContext) -> None:
        self.page, self.context = page, context
        self.sounds: list[Sound] = []

    def caption(self, title: str, note: str = "") -> None:
        self.page.evaluate("([title, note]) => window.__demoCaption(title, note)", [title, note])

    def screenshot(self, path: Path, *, top: bool = False) -> None:
        if top:
            self.page.evaluate("window.scrollTo(0, 0)")
        self.page.evaluate("window.__demoOverlay(false)")
        self.page.screenshot(path=str(path))
        self.page.evaluate("window.__demoOverlay(true)")

    def pause(self, seconds: float) -> None:
        self.page.wait_for_timeout(seconds * 1000)  # keeps the screencast events flowing, unlike time.sleep

    def point(self, target: Locator) -> tuple[float, float]:
        target.scroll_into_view_if_needed()
        box = target.bounding_box()
        assert box is not None, target
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        self.page.mouse.move(x, y, steps=8)
        self.pause(0.2)
        return x, y

    def click(self, target: Locator) -> None:
        x, y = self.point(target)
        self.page.mouse.click(x, y)  # where the pointer already is: no second round of actionability checks

    def type(self, target: Locator, text: str, delay: float = 35) -> None:
        self.click(target)
        target.press_sequentially(text, delay=delay)

    def sign_up(self) -> None:
        page = self.page
        page.goto("/signup")
        self.caption("Sign up", "Self-hosted: accounts, agents and chats live in your own database")
        self.pause(0.7)
        self.type(page.locator("#email"), "ada@example.com")
        self.type(page.locator("#display_name"), "Ada")
        self.type(page.locator("#password"), "correct horse battery", delay=20)
        self.click(page.get_by_role("button", name="Create account"))
        page.wait_for_url("**/")
        self.pause(0.7)

    def create_agents(self, out: Path) -> None:
        page = self.page
        self.caption("Create an agent", "A name, a system prompt, and optionally a model and a voice")
        self.pause(1.0)
        self.type(page.locator("#agent-name"), "Maths tutor")
        self.type(page.locator("#agent-prompt"), "You are a patient maths tutor. Answer briefly.", delay=18)
        self.click(page.get_by_role("button", name="Create agent"))
        page.locator("li.agent").first.wait_for()
        self.pause(0.6)
        page.locator("#agent-name").fill("Travel guide")
        page.locator("#agent-prompt").fill("You suggest one day trips by train.")
        self.click(page.get_by_role("button", name="Create agent"))
        page.locator("li.agent", has_text="Travel guide").wait_for()
        self.pause(1.0)
        self.screenshot(out / "screenshot-agents.png", top=True)

    def chat_by_text(self) -> None:
        page = self.page
        self.click(page.locator("a.agent-link", has_text="Maths tutor"))
        page.wait_for_url("**/agents/*")
        self.pause(0.6)
        self.click(page.locator("#new-session"))
        page.wait_for_url("**/sessions/*")
        self.caption(
            "Chat by text: the reply streams in",
            "Offline mode, no API key: a labelled stand-in reply (paced here so the tokens are visible)",
        )
        self.pause(1.0)
        self.type(page.locator("#message-input"), "What is a half of a quarter?", delay=45)
        self.pause(0.4)
        page.evaluate(PACE_STREAM, 60)
        page.keyboard.press("Enter")
        page.locator(".message.streaming").wait_for()
        page.locator(".message.streaming").wait_for(state="detached", timeout=30_000)
        self.pause(1.0)

    def talk(self, mic_wav: Path) -> None:
        """Hold the talk button while the microphone plays its clip, then release; its sound joins the track."""
        page = self.page
        page.evaluate(WATCH_PLAYBACK)
        ptt = page.locator("#ptt")
        self.point(ptt)
        self.pause(0.5)
        page.mouse.down()
        page.locator("#ptt.recording").wait_for()
        heard = decode_audio(mic_wav.read_bytes())
        self.sounds.append(Sound(time.time(), heard))
        self.pause(len(heard) / AUDIO_RATE + 0.2)
        page.mouse.up()

    def hear_reply(self) -> None:
        """Wait for the turn to end and every spoken segment to have played; each joins the track where it played."""
        page = self.page
        page.wait_for_function("() => document.getElementById('ptt-status').textContent === 'Done'", timeout=60_000)
        page.wait_for_function(HEARD_ALL, timeout=60_000)
        for entry in page.evaluate("window.__heard"):
            reply = self.context.request.get(entry["src"])
            assert reply.ok, (entry, reply.status)
            played = decode_audio(reply.body())[: int((entry["stopped"] - entry["playing"]) / 1000 * AUDIO_RATE)]
            self.sounds.append(Sound(entry["playing"] / 1000, played))

    def hold_to_talk(self, mic_wav: Path, out: Path) -> None:
        self.caption("Hold to talk: the reply is spoken", "The microphone plays a recording: “one two three four five”")
        self.talk(mic_wav)
        self.caption("Hold to talk: the reply is spoken", "Offline engines hear and speak: no API key, no network")
        self.hear_reply()
        self.pause(0.3)
        self.screenshot(out / "screenshot-chat.png")
        self.caption("Hold to talk: the reply is spoken", "Every voice message keeps its transcript and a player")
        self.pause(1.0)

    def streamed_voice(self, model_server: Server, mic_wav: Path) -> None:
        """The same chat on the server with a (stand-in) model: the answer is heard while it is still being written."""
        page = self.page
        page.goto(model_server.base_url + urlsplit(page.url).path)
        self.caption(
            "With a model: heard while it is still written",
            f"Here a stand-in model server (scripted answer, offline voice) writes a word every {STAND_IN_MS} ms",
        )
        self.pause(0.6)
        self.talk(mic_wav)
        page.locator(".message.streaming").wait_for(timeout=30_000)
        self.caption(
            "With a model: heard while it is still written",
            "Each sentence is spoken as soon as it is complete, and played back to back",
        )
        self.hear_reply()
        self.pause(0.8)

    def edit_and_delete(self) -> None:
        page = self.page
        self.caption("Edit and delete", "Agents and chats can be renamed, changed and removed")
        self.click(page.locator("nav.crumbs a").first)
        page.wait_for_url("**/")
        self.pause(0.6)
        agent = page.locator("li.agent", has_text="Maths tutor")
        self.click(agent.locator("button.edit-agent"))
        name = page.locator("#edit-name")
        name.wait_for()
        self.click(name)
        name.select_text()
        name.press_sequentially("Fractions tutor", delay=45)
        self.click(page.locator("form.edit-agent-form").get_by_role("button", name="Save"))
        page.locator("a.agent-link", has_text="Fractions tutor").wait_for()
        self.pause(0.8)
        page.once("dialog", lambda dialog: dialog.accept())
        self.click(page.locator("li.agent", has_text="Travel guide").locator("button.delete-agent"))
        page.locator("li.agent", has_text="Travel guide").wait_for(state="detached")
        self.pause(1.0)
        self.caption("Parley", "Self-hosted agents you can talk to, by text or by voice")
        self.pause(1.6)


def warm_up(server: Server, clip: Path) -> None:
    """One spoken question through the API, by an account the video never shows, before recording starts: the first
    recognition starts its process and loads its model (seconds), which is not what a running server makes you wait."""
    api = server.base_url + "/api/v1"
    token = api_client.sign_up(api, "warm-up@example.com")
    session = api_client.new_session(api, token)
    api_client.upload(api, f"/sessions/{session}/voice?wait=true", clip, token=token)


def record(out: Path) -> None:
    executable = require_chromium()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="parley-demo-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        mic = make_fake_mic_wav(root / "question-padded.wav", lead_seconds=MIC_LEAD, tail_seconds=MIC_TAIL)
        server = stack.enter_context(running_server(root / "server"))
        model = StandInModel()
        model.start()
        stack.callback(model.stop)
        # Both servers start before any turn: a server starting up marks the turns it finds under way as failed.
        shared = {key: value for key, value in server_env(server.root).items() if key in SHARED_SETTINGS}
        model_env = {"AI_PROVIDER": "openai", "OPENAI_API_KEY": "sk-demo", "OPENAI_BASE_URL": model.base_url}
        model_server = stack.enter_context(running_server(root / "model-server", extra_env=shared | model_env))
        warm_up(server, mic)
        StandInModel._synthesize("Ready.", "mp3")  # loads espeak-ng in this process
        playwright = stack.enter_context(sync_playwright())
        browser = playwright.chromium.launch(
            executable_path=executable, args=chromium_args(fake_mic=mic, auto_accept_mic=False)
        )
        context = browser.new_context(
            base_url=server.base_url,
            viewport={"width": WIDTH, "height": HEIGHT},
            permissions=["microphone"],
        )
        context.set_default_timeout(20_000)
        context.add_init_script(OVERLAY)
        page = context.new_page()
        cast = Screencast(context.new_cdp_session(page))
        walk = Walkthrough(page, context)
        page.goto("/signup")
        cast.start()
        steps = {
            "sign up": walk.sign_up,
            "create agents": lambda: walk.create_agents(out),
            "chat by text": walk.chat_by_text,
            "hold to talk": lambda: walk.hold_to_talk(mic, out),
            "streamed voice reply": lambda: walk.streamed_voice(model_server, mic),
            "edit and delete": walk.edit_and_delete,
        }
        for name, step in steps.items():
            started = time.monotonic()
            step()
            print(f"{name}: {time.monotonic() - started:.1f} s", flush=True)
        end = cast.stop()
        browser.close()
        video = out / "demo.webm"
        duration = encode_webm(cast.frames, end, walk.sounds, video)
    for name in ("demo.webm", "screenshot-agents.png", "screenshot-chat.png"):
        size = (out / name).stat().st_size
        print(f"{out / name}: {size / 1024:.0f} KiB" + (f", {duration:.1f} s" if name == "demo.webm" else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="folder for demo.webm and the screenshots")
    record(parser.parse_args().out)


if __name__ == "__main__":
    main()
