// Parley chat view: streamed text replies and push-to-talk voice turns. No build step, no dependencies.
"use strict";

// One chat on screen (#chat). The sidebar swaps another chat in without a reload (templates/_sidebar.html), so the view
// starts once per #chat element (see the end of this file), and `signal` aborts when that element has left the page:
// listeners on `document` or `window` must be added with `{ signal }`, and what the chat had under way (a recording,
// a voice turn's events, its playback) is let go then. A reply still streaming in finishes on the server.
function startChat(chat, signal) {
  const sessionId = chat.dataset.sessionId;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const history = document.getElementById("history");
  const errorBox = document.getElementById("chat-error");
  const form = document.getElementById("send-form");
  const input = document.getElementById("message-input");
  const ptt = document.getElementById("ptt");
  const status = document.getElementById("ptt-status");
  const replyQueue = document.getElementById("reply-queue");
  const playReply = document.getElementById("play-reply");
  const crumbTitle = document.getElementById("chat-title");
  const stopButton = document.getElementById("stop-reply");

  const scrollDown = () => { history.scrollTop = history.scrollHeight; };
  const showError = (text, retry) => {
    errorBox.textContent = text;
    if (retry) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "Retry";
      button.addEventListener("click", () => { errorBox.textContent = ""; retry(); });
      errorBox.append(" ", button);
    }
  };
  // The first message (typed or spoken) names the session: show the new title without a reload.
  const showTitle = (title) => {
    if (!title || crumbTitle.textContent === title) return;
    crumbTitle.textContent = title;
    document.title = `${title} · Parley`;
  };
  // A bubble for a message not stored yet: the page's <template> (the server's _message.html), with `text` in it.
  const placeholder = (role, text) => {
    const template = chat.querySelector(`template.placeholder[data-role="${role}"]`);
    const bubble = template.content.firstElementChild.cloneNode(true);
    bubble.querySelector(".content").textContent = text;
    return bubble;
  };
  // A turn's stream ends with `done` or `error` (`failed` for voice), whose `html` is the turn's stored messages,
  // rendered by the server: they take the placeholders' place, or go at the end; `title` is the session's new one.
  const settle = (data, placeholders = []) => {
    if (data.html) {
      history.querySelector(".empty-chat")?.remove();
      if (placeholders.length) placeholders[0].insertAdjacentHTML("beforebegin", data.html);
      else history.insertAdjacentHTML("beforeend", data.html);
    }
    placeholders.forEach((bubble) => bubble.remove());
    showTitle(data.title);
    touchSidebar(data.title);
    scrollDown();
  };
  // The sidebar (beside #chat) follows a finished turn: this chat goes to the top (newest activity first), titled.
  const touchSidebar = (title) => {
    if (signal.aborted) return;  // another chat is on screen now
    const item = document.querySelector(`#sidebar-chats li[data-session-id="${sessionId}"]`);
    if (!item) return;
    if (title) item.querySelector(".sidebar-title").textContent = title;
    const stored = history.querySelectorAll('.message:not([data-message-id=""])').length;
    item.querySelector(".sidebar-meta").textContent = `${stored} message${stored === 1 ? "" : "s"}`;
    item.parentElement.prepend(item);
  };
  const problemText = async (response) => {
    try { const problem = await response.json(); return problem.detail || problem.title; }
    catch { return `Request failed (${response.status}).`; }
  };

  // A rendered reply's code blocks (webapp/markdown.py) each carry a copy button: one listener serves them all, those
  // swapped in later too (the CSP allows no inline handlers). Without the clipboard API (a page not served from a
  // secure origin) the code is selected instead, for Ctrl+C.
  const copyTimers = new WeakMap();
  history.addEventListener("click", async (event) => {
    const button = event.target.closest("button.copy-code");
    const code = button?.closest(".code-block")?.querySelector("pre code");
    if (!code) return;
    const text = code.textContent.replace(/\n$/, "");
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch {
      getSelection().selectAllChildren(code);
      button.textContent = "Press Ctrl+C";
    }
    clearTimeout(copyTimers.get(button));
    copyTimers.set(button, setTimeout(() => { button.textContent = "Copy"; }, 2000));
  });

  // Server-sent events from a fetch() body: yields {event, data} as blocks arrive.
  async function* sseEvents(response) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message"; const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
      }
    }
  }

  // --- text ----------------------------------------------------------------------------------------------------------
  let textTurn = null;  // the typed turn whose reply is streaming: {stopped}

  async function send(text) {
    history.querySelector(".empty-chat")?.remove();
    const pending = placeholder("user", text);
    pending.classList.add("pending");
    const reply = placeholder("assistant", "");
    reply.classList.add("streaming");
    history.append(pending, reply);
    scrollDown();
    const content = reply.querySelector(".content");
    let response;
    try {
      response = await fetch(`/sessions/${sessionId}/send`, {
        method: "POST",
        headers: { "X-CSRF-Token": csrf, Accept: "text/event-stream" },
        body: new URLSearchParams({ content: text }),
      });
    } catch {
      pending.remove(); reply.remove(); input.value = text;
      return showError("Could not reach the server. Your message is back in the box.", () => send(text));
    }
    if (!response.ok) {  // refused before anything was stored: give the text back
      pending.remove(); reply.remove(); input.value = text;
      return showError(await problemText(response), () => { input.value = ""; send(text); });
    }
    // The turn is under way on the server now (its question is stored): Stop can cancel it.
    const turn = { stopped: false };
    textTurn = turn;
    showStop();
    try {
      for await (const { event, data } of sseEvents(response)) {
        if (event === "token") { content.textContent += data.delta; scrollDown(); }
        else if (event === "done" || event === "cancelled") settle(data, [pending, reply]);
        else if (event === "error") { settle(data, [pending, reply]); showError(data.detail, () => send(text)); }
      }
    } finally {
      if (textTurn === turn) textTurn = null;
      showStop();
    }
    scrollDown();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = ""; errorBox.textContent = "";
    send(text);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); form.requestSubmit(); }
  });

  // --- push-to-talk --------------------------------------------------------------------------------------------------
  const STAGES = JSON.parse(chat.dataset.stages);  // in order, from the server (the turn's statuses before it ends)
  const stageText = (stage) => `${stage[0].toUpperCase()}${stage.slice(1)}…`;
  const MIME_TYPES = ["audio/webm;codecs=opus", "audio/webm", "audio/mp4", "audio/ogg;codecs=opus"];
  let recording = null;  // {recorder, stream, chunks, started, timer, cancelled}
  let holding = false;

  const pickMimeType = () => MIME_TYPES.find((type) => window.MediaRecorder && MediaRecorder.isTypeSupported(type)) || "";
  const micMessage = (error) => ({
    NotAllowedError: "Microphone access was denied. Allow the microphone for this site in your browser's settings to talk.",
    SecurityError: "Microphone access was denied. Allow the microphone for this site in your browser's settings to talk.",
    NotFoundError: "No microphone was found. Connect one, or type your message instead.",
  }[error.name] || `The microphone could not start: ${error.message}`);

  async function startRecording() {
    if (recording || holding) return;
    holding = true;
    errorBox.textContent = "";
    if (player.busy() || activeTurn) bargeIn();
    if (!navigator.mediaDevices?.getUserMedia || !window.MediaRecorder) {
      holding = false;
      return showError("This browser cannot record audio. Type your message instead.");
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { autoGainControl: false, noiseSuppression: false, echoCancellation: false },
      });
    } catch (error) { holding = false; return showError(micMessage(error)); }
    if (!holding) { stream.getTracks().forEach((t) => t.stop()); return; }  // released before the mic was ready
    const mimeType = pickMimeType();
    const recorder = new MediaRecorder(stream, mimeType ? { mimeType } : undefined);
    const chunks = [];  // the last chunk arrives after stop(), when `recording` is already cleared
    recording = { recorder, stream, chunks, started: Date.now(), cancelled: false };
    recorder.addEventListener("dataavailable", (e) => { if (e.data.size) chunks.push(e.data); });
    recorder.start(250);
    ptt.classList.add("recording");
    ptt.setAttribute("aria-pressed", "true");
    const tick = () => {
      const seconds = Math.floor((Date.now() - recording.started) / 1000);
      status.textContent = `Recording 0:${String(seconds).padStart(2, "0")}… release to send, Esc to cancel`;
    };
    tick();
    recording.timer = setInterval(tick, 500);
  }

  function stopRecording(cancel) {
    holding = false;
    const current = recording;
    if (!current) return;
    recording = null;
    clearInterval(current.timer);
    current.cancelled = cancel;
    ptt.classList.remove("recording");
    ptt.setAttribute("aria-pressed", "false");
    current.recorder.addEventListener("stop", () => {
      current.stream.getTracks().forEach((t) => t.stop());
      if (current.cancelled) { status.textContent = "Cancelled."; return; }
      const blob = new Blob(current.chunks, { type: current.recorder.mimeType || "audio/webm" });
      upload(blob);
    }, { once: true });
    current.recorder.stop();
  }

  async function upload(blob) {
    status.textContent = "Sending…";
    const extension = blob.type.includes("mp4") ? "m4a" : blob.type.includes("ogg") ? "ogg" : "webm";
    const body = new FormData();
    body.append("audio", blob, `recording.${extension}`);
    let response;
    try {
      response = await fetch(`/sessions/${sessionId}/voice`, { method: "POST", headers: { "X-CSRF-Token": csrf }, body });
    } catch { status.textContent = ""; return showError("Could not reach the server.", () => upload(blob)); }
    if (response.status !== 202) {
      status.textContent = "";
      return showError(await problemText(response), response.status >= 500 ? () => upload(blob) : null);
    }
    follow(response.headers.get("Location"));
  }

  // The spoken reply arrives sentence by sentence (`audio` events): each is an <audio> element in #reply-queue,
  // loaded as soon as it is announced and played when the one before it ends, so they follow back to back.
  const player = {
    current: null,
    waiting: [],
    blocked: false,
    add(url) {
      const audio = new Audio(url);
      audio.preload = "auto";
      audio.addEventListener("ended", () => { audio.remove(); this.current = null; this.next(); showStop(); });
      replyQueue.append(audio);
      this.waiting.push(audio);
      if (!this.current && !this.blocked) this.next();
      showStop();
    },
    async next() {
      const audio = this.waiting.shift();
      if (!audio) return;
      this.current = audio;
      try { await audio.play(); playReply.hidden = true; }
      catch {  // autoplay blocked: one click on "Play reply" starts the queue
        if (this.current !== audio) return;  // stopped meanwhile
        this.blocked = true; this.current = null; this.waiting.unshift(audio); playReply.hidden = false;
      }
    },
    stop() {
      this.current?.pause();
      this.current = null; this.waiting = []; this.blocked = false;
      replyQueue.replaceChildren();
      playReply.hidden = true;
      showStop();
    },
    busy() { return this.current !== null || this.waiting.length > 0; },
  };
  let activeTurn = null;  // the voice turn being followed: {events, stopped, replying}

  // Barge-in: talking while a reply is being written or spoken stops it (and the turn, which keeps what it had).
  function bargeIn() {
    player.stop();
    if (!activeTurn || activeTurn.stopped) return;
    activeTurn.stopped = true;
    showStop();
    fetch(`/sessions/${sessionId}/cancel`, { method: "POST", headers: { "X-CSRF-Token": csrf } }).catch(() => {});
  }

  function follow(url) {
    const events = new EventSource(url);
    const turn = { events, stopped: false, replying: false };
    activeTurn = turn;
    let asked = null;  // the bubbles shown before the turn's messages are stored
    let answer = null;
    const bubbles = () => [asked, answer].filter(Boolean);
    const end = () => { events.close(); if (activeTurn === turn) activeTurn = null; showStop(); };
    // Accepted means it is being transcribed now; the stream's first event (the current state) may still say
    // "queued", so a stage is shown only when it moves forward.
    let reached = STAGES.indexOf("transcribing");
    status.textContent = stageText(STAGES[reached]);
    events.addEventListener("status", (message) => {
      const stage = JSON.parse(message.data).status;
      const index = STAGES.indexOf(stage);
      if (index > reached) { reached = index; status.textContent = stageText(stage); }
    });
    events.addEventListener("transcript", (message) => {
      history.querySelector(".empty-chat")?.remove();
      asked = placeholder("user", JSON.parse(message.data).text);
      asked.classList.add("pending");
      answer = placeholder("assistant", "");
      answer.classList.add("streaming");
      history.append(asked, answer);
      scrollDown();
      turn.replying = true;  // the reply is being written now: Stop can end it
      showStop();
    });
    events.addEventListener("token", (message) => {
      if (!answer) return;
      answer.querySelector(".content").textContent += JSON.parse(message.data).delta;
      scrollDown();
    });
    events.addEventListener("audio", (message) => {
      if (!turn.stopped) player.add(JSON.parse(message.data).url);
    });
    const finish = (message) => {
      end();
      const data = JSON.parse(message.data);
      status.textContent = message.type === "cancelled" ? "Stopped" : "Done";
      settle(data, bubbles());
    };
    events.addEventListener("done", finish);
    events.addEventListener("cancelled", finish);
    events.addEventListener("failed", (message) => {
      end();
      const data = JSON.parse(message.data);
      status.textContent = "";
      settle(data, bubbles());
      showError(data.detail);
    });
    events.onerror = () => { if (events.readyState === EventSource.CLOSED) { end(); status.textContent = ""; } };
  }

  playReply.addEventListener("click", () => { player.blocked = false; playReply.hidden = true; player.next(); });
  // The mouse is captured while held, so a layout change that moves the button under a still pointer (a reply's
  // bubbles settling) cannot cancel the recording; releasing outside the button does.
  ptt.addEventListener("pointerdown", (e) => {
    if (e.pointerType !== "mouse" || e.button !== 0) return;
    ptt.setPointerCapture(e.pointerId);
    startRecording();
  });
  ptt.addEventListener("pointerup", (e) => {
    if (e.pointerType !== "mouse") return;
    const box = ptt.getBoundingClientRect();
    const inside = e.clientX >= box.left && e.clientX <= box.right && e.clientY >= box.top && e.clientY <= box.bottom;
    stopRecording(!inside);
  });
  ptt.addEventListener("lostpointercapture", (e) => { if (e.pointerType === "mouse") stopRecording(true); });
  ptt.addEventListener("touchstart", (e) => { e.preventDefault(); startRecording(); }, { passive: false });
  ptt.addEventListener("touchend", (e) => { e.preventDefault(); stopRecording(false); });
  ptt.addEventListener("touchcancel", () => stopRecording(true));
  ptt.addEventListener("keydown", (e) => {
    if (e.code === "Space" && !e.repeat) { e.preventDefault(); startRecording(); }
  });
  ptt.addEventListener("keyup", (e) => { if (e.code === "Space") { e.preventDefault(); stopRecording(false); } });
  ptt.addEventListener("blur", () => stopRecording(true));
  // Esc cancels a recording in progress; otherwise it is the Stop button, while that is shown.
  document.addEventListener("keydown", (e) => {
    if (e.key !== "Escape" || e.isComposing) return;
    if (recording || holding) stopRecording(true);
    else if (!stopButton.hidden) { e.preventDefault(); stopReply(); }
  }, { signal });

  // --- stop ----------------------------------------------------------------------------------------------------------
  // Shown while a typed reply streams, or a spoken one is written or played; it cancels the session's turn
  // (POST /sessions/{id}/cancel, the API's session cancel): the reply so far is stored as `cancelled` and comes back
  // in the stream's `cancelled` event, which settles the bubble as for `done`.
  function showStop() {
    const running = (textTurn && !textTurn.stopped) || (activeTurn?.replying && !activeTurn.stopped) || player.busy();
    stopButton.hidden = !running;
  }

  function stopReply() {
    if (textTurn && !textTurn.stopped) {
      textTurn.stopped = true;
      fetch(`/sessions/${sessionId}/cancel`, { method: "POST", headers: { "X-CSRF-Token": csrf } }).catch(() => {});
    }
    bargeIn();  // a voice turn, and any reply still playing
    showStop();
  }

  stopButton.addEventListener("click", stopReply);
  // Swapped out: no recording is sent, no event stream stays open, nothing of this chat keeps playing.
  signal.addEventListener("abort", () => {
    stopRecording(true);
    activeTurn?.events.close();
    activeTurn = null;
    player.stop();
  });
  scrollDown();
}

(() => {
  // Start the chat on the page, and again whenever htmx puts another one in its place (a sidebar link, "New chat",
  // deleting the chat on screen, the browser's back button); the one it replaced is stopped first.
  let running = null;  // {chat, controller}
  const start = () => {
    const chat = document.getElementById("chat");
    if (running?.chat === chat) return;
    running?.controller.abort();
    running = null;
    if (!chat) return;
    running = { chat, controller: new AbortController() };
    startChat(chat, running.controller.signal);
  };
  start();
  document.addEventListener("htmx:afterSettle", start);
  document.addEventListener("htmx:historyRestore", start);

  // At narrow widths the sidebar folds away behind its toggle (app.css shows it when the toggle is expanded).
  document.addEventListener("click", (event) => {
    const toggle = event.target.closest?.("#sidebar-toggle");
    if (!toggle) return;
    const open = toggle.getAttribute("aria-expanded") !== "true";
    toggle.setAttribute("aria-expanded", String(open));
    if (open) document.querySelector("#sidebar a[aria-current], #sidebar a, #sidebar button")?.focus();
  });
})();
