// ComfyUI frontend extension: the Persona chat as a sidebar tab.
//
// It talks the persona chat protocol (PROTOCOL.md) to /persona/ws, which the pack mounts
// on ComfyUI's own server (headless/comfyui_routes.py). The protocol client is NOT copied
// here: it is imported from /persona/static/persona_client.js, the very file the headless
// chat page loads, served by the same route table; so is the speech player
// (/persona/static/audio_player.js: Web Audio, each packet scheduled at its pts against
// the video clock), and so is the WebRTC client (/persona/static/webrtc_media.js): with
// "Media: WebRTC" the tab offers, plays the H.264/VP8 and Opus tracks in a <video>, and falls
// back to JPEG and PCM over the WebSocket when WebRTC is not offered or fails; the badge
// says which. Plain DOM only (no canvas-drawn node widgets, which the new Vue node
// renderer does not draw).
//
// What it streams: the pack's chat workflow, or the graph on the canvas ("Stream: this
// canvas"): the tab converts it as Run does (app.graphToPrompt), uploads it
// (POST /persona/workflows) and names it in hello.workflow. Either way every chunk is a
// prompt in ComfyUI's own queue, so any node type can be in the loop, the canvas shows the
// progress of a message's prompt (hello.comfy_client_id), and Cancel pauses the stream
// (error `interrupted`; Resume goes on). The choice outlives a reload, as the session does.
// While the tab is hidden (for HIDDEN_CLOSE_MS) the socket is closed: nothing renders for
// nobody; shown again, the session resumes.
//
// Beyond the chat: a mute button, server-side recording (record → stop → a download
// link), and a persona gallery (GET /persona/personas; a click starts a new session with
// hello.persona) with card import (file input or drop; POST /persona/personas, the
// server's `bad_card` message shown as it is). Scenes of 2–4 personas (the cast, who speaks,
// a line per speaker, the scene picker) are persona_scene.js's. The browser test reads
// `window.personaPanelAudio.stats` (samples decoded, RMS).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { SceneView, canvasScene, element } from "./persona_scene.js";

/** How long the tab may be off screen before its socket closes (see watchVisibility). */
const HIDDEN_CLOSE_MS = 5000;

const TAB_ID = "persona-chat";
const QUICK_ACTIONS = [
  ["wave", "smile"], ["smile", null], ["nod", "neutral"], ["shake_head", "neutral"],
  ["sit", "neutral"], ["stand", "neutral"], ["bow", "neutral"], ["clap", "excited"],
  ["dance", "excited"], ["think", "thoughtful"], ["shrug", "confused"],
];

const STYLE = `
.persona-panel { display: flex; flex-direction: column; gap: .5rem; padding: .6rem; height: 100%;
  box-sizing: border-box; font-size: 13px; color: var(--fg-color, inherit); overflow: hidden; }
.persona-panel header { display: flex; align-items: center; gap: .5rem; }
.persona-panel header h3 { margin: 0; font-size: 1rem; flex: 1; }
.persona-panel .badge { font-size: .7rem; padding: .1rem .5rem; border-radius: 999px; background: #6b7280; color: #fff; }
.persona-panel .badge[data-state="ready"] { background: #16a34a; }
.persona-panel .badge[data-state="reconnecting"], .persona-panel .badge[data-state="refused"],
.persona-panel .badge[data-state="unavailable"] { background: #b91c1c; }
.persona-panel canvas { width: 100%; aspect-ratio: 1; background: #000; border-radius: 6px; display: block; }
.persona-panel video { width: 100%; background: #000; border-radius: 6px; display: block; }
.persona-panel canvas[hidden], .persona-panel video[hidden] { display: none; }
.persona-panel .badge[data-transport="webrtc"] { background: #1d4ed8; }
.persona-panel .status { display: flex; flex-wrap: wrap; gap: .25rem .75rem; justify-content: center; }
.persona-panel .status b { opacity: .65; font-weight: 500; margin-right: .2rem; }
.persona-panel .activity { padding: 0 .4rem; border-radius: 4px; background: #374151; color: #fff; }
.persona-panel .activity[data-activity="acting"] { background: #a16207; }
.persona-panel .activity[data-activity="transitioning"] { background: #1d4ed8; }
.persona-panel .quick { display: flex; flex-wrap: wrap; gap: .25rem; justify-content: center; }
.persona-panel button { font: inherit; border-radius: 6px; padding: .2rem .55rem; cursor: pointer;
  border: 1px solid var(--border-color, #4b5563); background: var(--comfy-input-bg, #222); color: inherit; }
.persona-panel .quick button { text-transform: capitalize; }
.persona-panel ol { list-style: none; margin: 0; padding: 0; flex: 1; min-height: 80px; overflow-y: auto;
  display: flex; flex-direction: column; gap: .35rem; }
.persona-panel li { max-width: 88%; padding: .3rem .55rem; border-radius: 10px; white-space: pre-wrap; overflow-wrap: anywhere; }
.persona-panel li.user { align-self: flex-end; background: #2563eb; color: #fff; }
.persona-panel li.persona { align-self: flex-start; background: var(--comfy-input-bg, #333); }
.persona-panel li .directives { display: block; font-size: .7rem; opacity: .7; margin-top: .15rem; }
.persona-panel .errors { color: #f87171; font-size: .75rem; min-height: 1em; }
.persona-panel form { display: flex; gap: .35rem; }
.persona-panel input { flex: 1; min-width: 0; font: inherit; padding: .3rem .5rem; border-radius: 6px; color: inherit;
  border: 1px solid var(--border-color, #4b5563); background: var(--comfy-input-bg, #222); }
.persona-panel .metrics { font-size: .7rem; opacity: .7; text-align: center; margin: 0; }
.persona-panel .controls { display: flex; flex-wrap: wrap; gap: .35rem; align-items: center; justify-content: center; }
.persona-panel button[aria-pressed="true"] { background: #b91c1c; color: #fff; }
.persona-panel .controls a { font-size: .75rem; }
.persona-panel details { border: 1px solid var(--border-color, #4b5563); border-radius: 6px; padding: .2rem .4rem; }
.persona-panel summary { cursor: pointer; font-size: .8rem; }
.persona-panel .gallery { list-style: none; margin: .3rem 0; padding: 0; display: grid;
  grid-template-columns: repeat(auto-fill, minmax(64px, 1fr)); gap: .3rem; flex: none; overflow: visible; }
.persona-panel .gallery li { max-width: none; padding: 0; border-radius: 0; }
.persona-panel .gallery button { width: 100%; padding: .15rem; display: flex; flex-direction: column; align-items: center;
  gap: .1rem; font-size: .7rem; }
.persona-panel .gallery button[aria-current="true"] { outline: 2px solid #16a34a; }
.persona-panel .gallery img { width: 100%; aspect-ratio: 1; object-fit: cover; border-radius: 4px; background: #111; }
.persona-panel .drop { border: 1px dashed var(--border-color, #6b7280); border-radius: 6px; padding: .3rem; font-size: .75rem;
  text-align: center; }
.persona-panel .drop.dragging { background: #1d4ed8; color: #fff; }
.persona-panel .drop input { display: block; margin: .2rem auto 0; font-size: .7rem; border: none; background: none; padding: 0; }
.persona-panel .gallery-message { font-size: .75rem; min-height: 1em; }
.persona-panel .gallery-message[data-kind="error"] { color: #f87171; }
.persona-panel .gallery-message[data-kind="warning"] { color: #fbbf24; }
.persona-panel .source { display: flex; gap: .35rem; align-items: center; font-size: .75rem; }
.persona-panel .source select { flex: 1; min-width: 0; font: inherit; color: inherit; border-radius: 6px;
  border: 1px solid var(--border-color, #4b5563); background: var(--comfy-input-bg, #222); }
`;

// Media transport: WebRTC or the WebSocket, the tab's choice kept in localStorage; the
// default is the chat page's (webrtc_media.js DEFAULT_MEDIA).
const MEDIA_KEY = "persona.comfyui.media";
// The Stream choice, this tab's (sessionStorage, like the session it streams): a reload shows
// what the resumed session streams and a new session streams the same.
const SOURCE_KEY = "persona.comfyui.source";

const base = () => api.api_base || "";
// Server answers name paths from the root ("/persona/..."); behind a prefix they need it.
const routed = (url) => (url && url.startsWith("/") ? `${base()}${url}` : url);

function socketUrl() {
  // api.api_base is "" or a sub-path when ComfyUI is served behind a prefix.
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${window.location.host}${api.api_base || ""}/persona/ws`;
}

/** A manual action's bubble, as its quick button says it ("[wave]"; "[smile]" for an
 * expression on an idle body). */
function actionLabel(directive) {
  const name = directive.action === "idle" ? directive.expression : directive.action;
  return `[${String(name).replace("_", " ")}]`;
}

// One panel per page: built on first open, kept (with its connection and history) while
// the sidebar tab is closed and re-opened.
class PersonaPanel {
  constructor() {
    this.client = null;
    this.player = null;
    this.recordingOn = false;
    this.vocabulary = { actions: [], expressions: [] };
    this.bubbles = new Map();
    this.latestFrame = null;
    this.drawing = false;
    this.root = this.build();
    this.scene = new SceneView(this); // scenes of 2–4 personas: persona_scene.js
  }

  build() {
    const $ = (name, tag, attributes = {}, ...children) =>
      (this[name] = element(tag, { "data-testid": `persona-${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`, ...attributes }, ...children));
    const statusItem = (label, name, initial) =>
      element("span", {}, element("b", { text: label }), $(name, "span", { text: initial }));
    return element(
      "div", { class: "persona-panel", "data-testid": "persona-panel" },
      element("style", { text: STYLE }),
      element("header", {}, $("name", "h3", { text: "Persona" }),
        $("mute", "button", { type: "button", "aria-pressed": "false", title: "Mute the persona's voice", text: "Mute" }),
        $("transport", "span", { class: "badge", "data-transport": "websocket", title: "How the video and voice reach this tab",
          text: "WebSocket" }),
        $("connection", "span", { class: "badge", "data-state": "connecting", text: "connecting…" })),
      element("div", { class: "source" },
        element("label", { for: "persona-source", text: "Stream" }),
        $("source", "select", { id: "persona-source", title: "Which workflow streams: the pack's chat workflow, or the graph on the canvas (any nodes)" },
          element("option", { value: "default", text: "the persona chat workflow" }),
          element("option", { value: "canvas", text: "this canvas (any nodes)" })),
        $("resume", "button", { type: "button", hidden: "", title: "Go on streaming after Cancel", text: "Resume" }),
        element("label", { for: "persona-media", text: "Media" }),
        $("media", "select", { id: "persona-media", title: "WebRTC (H.264/VP8 and Opus, where the server and browser offer it) or JPEG and PCM over the WebSocket" },
          element("option", { value: "webrtc", text: "WebRTC" }),
          element("option", { value: "websocket", text: "WebSocket" }))),
      $("video", "canvas", { width: "384", height: "384", "aria-label": "The persona, live" }),
      $("rtcVideo", "video", { playsinline: "", autoplay: "", hidden: "", "aria-label": "The persona, live (WebRTC)" }),
      element("div", { class: "status", "aria-live": "polite" },
        statusItem("action", "action", "idle"), statusItem("expression", "expression", "neutral"),
        statusItem("pose", "pose", "standing"), $("activity", "span", { class: "activity", text: "idle" })),
      $("quick", "div", { class: "quick", "aria-label": "Quick actions" }),
      element("div", { class: "controls" },
        $("record", "button", { type: "button", "aria-pressed": "false", title: "Record this session to MP4 on the server",
          text: "Record" }),
        $("recordingLink", "a", { hidden: "", download: "", text: "Download recording" })),
      $("metrics", "p", { class: "metrics", text: "–" }),
      element("details", {},
        element("summary", { text: "Personas" }),
        $("gallery", "ul", { class: "gallery", "aria-label": "Pick a persona" }),
        $("drop", "div", { class: "drop" },
          element("span", { text: "Import a character card (PNG or JSON, V2/V3): drop it here or " }),
          $("cardFile", "input", { type: "file", accept: ".png,.json,image/png,application/json" })),
        $("galleryMessage", "div", { class: "gallery-message", role: "status" })),
      $("history", "ol", { "aria-live": "polite" }),
      $("errors", "div", { class: "errors", role: "alert" }),
      $("composer", "form", { autocomplete: "off" },
        $("message", "input", { dir: "auto", placeholder: "Say something, e.g. “wave and smile”" }),
        element("button", { type: "submit", text: "Send" }),
        $("reset", "button", { type: "button", title: "Back to idle (history kept)", text: "Reset" })),
    );
  }

  async connect() {
    if (this.client || this._connecting) return; // opened, or being opened (the imports below)
    this._connecting = true;
    try {
      await this._connect();
    } finally {
      this._connecting = false;
    }
  }

  async _connect() {
    let module;
    try {
      module = await import(`${base()}/persona/static/persona_client.js`);
    } catch (error) {
      this.setConnection("unavailable", "chat service not mounted");
      this.showError({ code: "unavailable", message: `could not load the protocol client: ${error}` });
      return;
    }
    try {
      const audio = await import(`${base()}/persona/static/audio_player.js`);
      this.player = new audio.SpeechPlayer();
      window.personaPanelAudio = this.player; // the browser test reads .stats
    } catch (error) {
      this.mute.disabled = true;
      this.mute.title = `no speech playback: ${error}`;
    }
    const client = new module.PersonaClient({ url: socketUrl(), storageKey: "persona.comfyui.session",
                                              comfyClientId: api.clientId ?? null });
    this.client = client;
    window.personaPanelClient = client; // the browser tests read .ready and drop .ws
    client.addEventListener("status", (event) => {
      if (event.detail.state === "reconnecting") console.info(`persona panel: socket closed (${event.detail.code}), reconnecting`);
    });
    await this.wireMedia(client);
    this.wire(client);
    this.scene.attach(client);
    this.wireExtras(client);
    this.wireSource(client);
    this.watchVisibility(client);
    await this.restoreSource(client);
    client.connect();
    this.loadPersonas();
  }

  // -- how the media travel: WebRTC where offered, else the WebSocket -------------------------

  async wireMedia(client) {
    // The chat page's own WebRTC client (/persona/static/webrtc_media.js), as for the protocol client.
    let transportLabel;
    try {
      const media = await import(`${base()}/persona/static/webrtc_media.js`);
      const saved = localStorage.getItem(MEDIA_KEY);
      this.media.value = saved === "webrtc" || saved === "websocket" ? saved : media.DEFAULT_MEDIA;
      this.rtc = new media.WebRTCMedia(client, this.rtcVideo, { enabled: this.media.value === "webrtc" });
      transportLabel = media.transportLabel;
    } catch (error) {
      this.rtc = null;
      this.media.value = "websocket";
      this.media.disabled = true;
      this.media.title = `no WebRTC: ${error}`;
      return;
    }
    window.personaPanelRtc = this.rtc; // the browser test reads .transport and .frames
    this.rtc.addEventListener("transport", (event) => {
      const { transport } = event.detail;
      this.transport.dataset.transport = transport;
      this.transport.textContent = transportLabel(event.detail);
      this.rtcVideo.hidden = transport !== "webrtc";
      this.video.hidden = transport === "webrtc";
    });
    this.media.addEventListener("change", () => {
      localStorage.setItem(MEDIA_KEY, this.media.value);
      this.rtc.setEnabled(this.media.value === "webrtc");
    });
  }

  // -- what streams, and only while someone looks ---------------------------------------

  wireSource(client) {
    this.source.addEventListener("change", () => this.streamSource(client, this.source.value));
    this.resume.addEventListener("click", () => { this.resume.hidden = true; client.resume(); });
    client.addEventListener("error", (event) => {
      if (event.detail.code === "interrupted") this.resume.hidden = false;
    });
    // A resumed session keeps its Resume button: a pause held while away comes before `ready`.
    client.addEventListener("ready", (event) => { if (!event.detail.resumed) this.resume.hidden = true; });
  }

  async uploadCanvas() {
    const { output } = await app.graphToPrompt(); // exactly what Run would queue
    const response = await fetch(`${base()}/persona/workflows`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(output),
    });
    const body = await response.json().catch(() => ({}));
    if (response.status !== 201) throw new Error(body.message ?? `HTTP ${response.status}`);
    return body.id;
  }

  async restoreSource(client) {
    // After a reload: the canvas is uploaded again (a content id: the same graph gets the same
    // one), since a server restarted meanwhile has lost the upload the session was made from.
    if (sessionStorage.getItem(SOURCE_KEY) !== "canvas") return;
    try {
      client.workflow = await this.uploadCanvas();
      client.scene = canvasScene(app.graph);
      this.source.value = "canvas";
    } catch (error) {
      console.info(`persona panel: the canvas no longer streams (${error.message}); the pack's workflow does`);
      sessionStorage.removeItem(SOURCE_KEY);
    }
  }

  async streamSource(client, source) {
    let workflow = null;
    if (source === "canvas") {
      try {
        workflow = await this.uploadCanvas();
      } catch (error) {
        const message = `this canvas cannot stream: ${error.message}`;
        this.showError({ code: "bad_workflow", message });
        // ComfyUI's own error dialog, as a bad Run gets. Its `show` sets a string as HTML, and
        // the message quotes the workflow's node titles: give it an element holding text.
        app.ui?.dialog?.show?.(element("p", { text: message }));
        this.source.value = "default";
        return;
      }
    }
    sessionStorage.setItem(SOURCE_KEY, source);
    client.workflow = workflow;
    this.player?.restart();
    this.history.replaceChildren();
    this.bubbles.clear();
    this.errors.replaceChildren();
    this.setConnection("connecting", "switching…");
    // A canvas holding a Persona Scene node streams that scene (hello.scene).
    client.newSession(client.ready?.persona.id ?? null, source === "canvas" ? canvasScene(app.graph) : null);
  }

  watchVisibility(client) {
    // The sidebar removes or hides the tab's content when another tab opens, and the page can
    // be hidden: after HIDDEN_CLOSE_MS of that the socket closes (the server stops rendering),
    // and opens again when the tab is shown (resume). Counted only once the tab has been on
    // screen: a tab still being laid out (seconds on a loaded machine) is not "hidden", and a
    // glance at another tab does not restart the stream.
    let onScreen = false;
    let pageVisible = document.visibilityState === "visible";
    let seen = false;
    let timer = null;
    const update = () => {
      if (onScreen && pageVisible) {
        seen = true;
        clearTimeout(timer);
        timer = null;
        if (!client.ws) client.connect();
      } else if (seen && timer === null) {
        timer = setTimeout(() => {
          timer = null;
          if (client.active) { // a socket, or a reconnect about to open one
            console.info("persona panel: hidden, the stream pauses until the tab is shown");
            client.close();
          }
        }, HIDDEN_CLOSE_MS);
      }
    };
    new IntersectionObserver((entries) => {
      onScreen = entries.at(-1).isIntersecting;
      update();
    }).observe(this.root);
    document.addEventListener("visibilitychange", () => {
      pageVisible = document.visibilityState === "visible";
      update();
    });
  }

  // -- voice, recording, gallery ---------------------------------------------------------

  wireExtras(client) {
    const player = this.player;
    // Browsers start audio only after a user gesture (autoplay policy): any click in the panel.
    this.root.addEventListener("pointerdown", () => player?.resume(), { capture: true });
    this.root.addEventListener("keydown", () => player?.resume(), { capture: true });
    client.addEventListener("audio", (event) => player?.push(event.detail.pts, event.detail.payload));
    client.addEventListener("ready", (event) => {
      const ready = event.detail;
      if (!ready.resumed) player?.restart();
      player?.setRate(ready.audio_rate);
      this.markCurrentPersona(ready.persona.id);
      // A resumed session may be recording still (the tab was hidden, the page reloaded).
      this.setRecording(Boolean(ready.recordings?.some((r) => r.state === "recording")));
    });
    this.mute.addEventListener("click", () => {
      const muted = this.mute.getAttribute("aria-pressed") !== "true";
      player?.setMuted(muted);
      this.rtc?.setMuted(muted);
      this.mute.setAttribute("aria-pressed", String(muted));
      this.mute.textContent = muted ? "Unmute" : "Mute";
    });
    this.record.addEventListener("click", () => {
      if (!this.recordingOn) this.recordingLink.hidden = true;
      this.record.disabled = true; // until the server answers
      client.record(!this.recordingOn);
    });
    client.addEventListener("recording", (event) => {
      const message = event.detail;
      this.setRecording(message.on);
      if (message.reason) this.showError({ code: "recording", message: message.reason }); // why it stopped
      if (!message.on && message.url && message.frames > 0) { // no frame: no file was kept
        this.recordingLink.href = routed(message.url);
        const seconds = (message.duration_ms / 1000).toFixed(1);
        this.recordingLink.textContent = `Download recording (${seconds} s, ${message.frames} frames)`;
        this.recordingLink.hidden = false;
      }
    });
    client.addEventListener("error", () => { this.record.disabled = false; });
    this.cardFile.addEventListener("change", (event) => {
      this.importCard(event.target.files[0]);
      event.target.value = "";
    });
    this.drop.addEventListener("dragover", (event) => { event.preventDefault(); this.drop.classList.add("dragging"); });
    this.drop.addEventListener("dragleave", () => this.drop.classList.remove("dragging"));
    this.drop.addEventListener("drop", (event) => {
      event.preventDefault();
      this.drop.classList.remove("dragging");
      this.importCard(event.dataTransfer?.files?.[0]);
    });
  }

  setRecording(on) {
    this.recordingOn = Boolean(on);
    this.record.disabled = false;
    this.record.setAttribute("aria-pressed", String(this.recordingOn));
    this.record.textContent = this.recordingOn ? "Stop recording" : "Record";
  }

  galleryNote(text, kind = "info") {
    this.galleryMessage.textContent = text;
    this.galleryMessage.dataset.kind = kind;
  }

  markCurrentPersona(id) {
    for (const button of this.gallery.querySelectorAll("button")) {
      button.setAttribute("aria-current", String(button.dataset.persona === id));
    }
  }

  async loadPersonas() {
    let personas;
    try {
      const response = await fetch(`${base()}/persona/personas`);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      personas = await response.json();
    } catch (error) {
      this.galleryNote(`could not list personas: ${error.message}`, "error");
      return;
    }
    const items = personas.map((persona) => {
      const button = element("button", { type: "button", "data-persona": persona.id, title: persona.description || "" },
        element("img", { src: routed(persona.portrait), alt: "", loading: "lazy" }),
        element("span", { text: persona.builtin ? persona.name : `${persona.name} (yours)` }));
      button.addEventListener("click", () => this.switchPersona(persona.id));
      const item = element("li", {}, button);
      this.scene.pickable(item, persona);
      return item;
    });
    this.gallery.replaceChildren(...items);
    if (this.client?.ready) this.markCurrentPersona(this.client.ready.persona.id);
  }

  switchPersona(id) {
    if (!this.client || (this.client.ready?.persona.id === id && !this.client.ready?.scene)) return;
    this.player?.restart();
    this.history.replaceChildren();
    this.bubbles.clear();
    this.setConnection("connecting", "switching…");
    this.client.newSession(id); // a new session whose hello names the persona
  }

  async importCard(file) {
    if (!file) return;
    this.galleryNote(`importing ${file.name}…`);
    const form = new FormData();
    form.append("card", file, file.name);
    let response;
    let body = {};
    try {
      response = await fetch(`${base()}/persona/personas`, { method: "POST", body: form });
      body = await response.json().catch(() => ({}));
    } catch (error) {
      this.galleryNote(`import failed: ${error.message}`, "error");
      return;
    }
    if (response.status === 201) {
      const warnings = body.warnings ?? [];  // what the card lost on the way in (it still loaded)
      if (warnings.length) this.galleryNote(`imported ${body.name}; warning: ${warnings.join("; ")}`, "warning");
      else this.galleryNote(`imported ${body.name}`);
      await this.loadPersonas();
      // The canvas's Card Loader lists the same library: refresh its choices too.
      await app.refreshComboInNodes?.();
    } else {
      this.galleryNote(`${body.code ?? `HTTP ${response.status}`}: ${body.message ?? "import failed"}`, "error");
    }
  }

  setConnection(state, text = state) {
    this.connection.dataset.state = state;
    this.connection.textContent = text;
  }

  /** The conversation the server kept (`ready.history`), then what was sent since: a reload
   * or a reconnect shows the chat as it was, once. */
  redrawHistory(history, flushed) {
    this.history.replaceChildren();
    this.bubbles.clear();
    for (const entry of history ?? []) {
      if (entry.role === "user") {
        const directive = entry.kind === "action" ? entry.directives?.[0] : null;
        this.addBubble("user", directive ? actionLabel(directive) : entry.text);
        continue;
      }
      if (entry.character) { // a scene's line: its speaker's bubble, as it was shown live
        this.scene.line(entry.reply_to, entry.character, entry.text);
        continue;
      }
      const bubble = this.personaBubble(entry.reply_to);
      bubble.textContent = entry.text;
      if (entry.directives?.length) {
        this.showDirectives(bubble, entry.directives);
        this.scene.nameDirectives(entry);
      }
      bubble.dataset.done = String(entry.done ?? true);
    }
    for (const message of flushed ?? []) {
      if (message.type === "chat") this.addBubble("user", message.text);
      else if (message.type === "action") this.addBubble("user", actionLabel(message.directive));
    }
  }

  /** The directives a reply performs, under its text ("wave · smile → nod · neutral"). */
  showDirectives(bubble, directives) {
    const text = directives.length
      ? directives.map((d) => `${d.action} · ${d.expression}`).join(" → ")
      : "(no action)";
    bubble.dataset.directives = text;
    bubble.append(element("span", { class: "directives", text }));
  }

  addBubble(role, text) {
    const item = element("li", { class: role, text, dir: "auto" }); // right to left for Arabic, Hebrew
    this.history.append(item);
    item.scrollIntoView({ block: "end" });
    return item;
  }

  personaBubble(replyTo) {
    let bubble = this.bubbles.get(replyTo);
    if (!bubble) {
      bubble = this.addBubble("persona", "…");
      bubble.dataset.replyTo = replyTo ?? "";
      this.bubbles.set(replyTo, bubble);
    }
    return bubble;
  }

  showError(message) {
    this.errors.replaceChildren(element("div", { text: `${message.code}: ${message.message}` }));
  }

  setState(state) {
    this.action.textContent = state.action;
    this.expression.textContent = state.expression;
    this.pose.textContent = state.pose;
    this.activity.textContent = state.speaking ? `${state.activity}, speaking` : state.activity;
    this.activity.dataset.activity = state.activity;
  }

  renderQuickActions() {
    const actions = new Set(this.vocabulary.actions);
    const expressions = new Set(this.vocabulary.expressions);
    const buttons = QUICK_ACTIONS.filter(([name]) => actions.has(name) || expressions.has(name))
      .map(([name, expression]) => {
        const label = name.replace("_", " ");
        const button = element("button", { type: "button", "data-action": name, text: label });
        button.addEventListener("click", () => {
          // An expression-only button ("smile") keeps the body idle.
          const directive = actions.has(name)
            ? { action: name, expression: expression ?? "neutral", intensity: 0.7 }
            : { action: "idle", expression: name, intensity: 0.7 };
          this.client?.action(this.scene.decorate(directive));
          this.addBubble("user", actionLabel(directive));
        });
        return button;
      });
    this.quick.replaceChildren(...buttons);
  }

  async drawLatest() {
    // Decode only the newest frame: when decoding falls behind, older frames are skipped.
    this.drawing = true;
    const context = this.video.getContext("2d");
    while (this.latestFrame) {
      const frame = this.latestFrame;
      this.latestFrame = null;
      try {
        const bitmap = await createImageBitmap(new Blob([frame.payload], { type: "image/jpeg" }));
        if (this.video.width !== bitmap.width || this.video.height !== bitmap.height) {
          this.video.width = bitmap.width;
          this.video.height = bitmap.height;
        }
        context.drawImage(bitmap, 0, 0);
        bitmap.close();
        this.player?.noteVideo(frame.pts);
        this.video.dataset.frameIndex = String(frame.index);
        this.video.dataset.framesDrawn = String(Number(this.video.dataset.framesDrawn || 0) + 1);
      } catch (error) {
        console.warn("persona panel: could not decode a frame", error);
      }
    }
    this.drawing = false;
  }

  wire(client) {
    client.addEventListener("frame", (event) => {
      this.latestFrame = event.detail;
      if (!this.drawing) this.drawLatest();
    });
    client.addEventListener("status", (event) => {
      const { state, code } = event.detail;
      this.setConnection(state, state === "refused" ? `refused (${code})` : state);
    });
    client.addEventListener("ready", (event) => {
      const ready = event.detail;
      this.name.textContent = ready.persona.name;
      this.name.title = ready.persona.description;
      this.vocabulary = ready.vocabulary;
      this.renderQuickActions();
      this.setState(ready.state);
      if (!ready.resumed) this.errors.replaceChildren(); // a resumed one may have said why it paused
      this.redrawHistory(ready.history, client.flushed);
    });
    client.addEventListener("status", (event) => {
      if (event.detail.state !== "taken") return;
      const again = element("button", { type: "button", text: "Take it back" });
      again.addEventListener("click", () => { this.errors.replaceChildren(); client.takeOver(); });
      this.errors.replaceChildren(element("div", { text: "this conversation moved to another tab or window " }, again));
    });
    client.addEventListener("in_use", () => this.showError({
      code: "session_in_use", message: "this conversation is open in another tab: a new one started here" }));
    client.addEventListener("ended", () => this.showError({
      code: "ended", message: "the conversation could not be resumed (the server restarted or it expired): a new one started" }));
    client.addEventListener("directives", (event) => {
      const { reply_to: replyTo, directives } = event.detail;
      this.showDirectives(this.personaBubble(replyTo), directives);
    });
    client.addEventListener("reply", (event) => {
      const { reply_to: replyTo, text, done, character } = event.detail;
      if (character) return; // a scene's line, one bubble per speaker (persona_scene.js)
      const bubble = this.personaBubble(replyTo);
      const directives = bubble.querySelector(".directives");
      bubble.textContent = text || (done ? "" : "…");
      if (directives) bubble.append(directives);
      bubble.dataset.done = String(done);
    });
    client.addEventListener("state", (event) => {
      if (!this.scene.ownsState(event.detail.state)) this.setState(event.detail.state); // the status row: the lead
    });
    client.addEventListener("metrics", (event) => {
      const m = event.detail;
      const latency = m.latency_ms == null ? "–" : `${Math.round(m.latency_ms)} ms`;
      this.metrics.textContent = `${m.fps} fps · latency ${latency} · ${m.frames_sent} frames`;
    });
    client.addEventListener("error", (event) => this.showError(event.detail));
    this.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = this.message.value.trim();
      if (!text) return;
      this.errors.replaceChildren(); // errors stay visible until the next message
      if (client.chat(text) === null) return; // too long: the error says so, the text stays to edit
      this.addBubble("user", text);
      this.message.value = "";
    });
    this.reset.addEventListener("click", () => {
      this.player?.stop();
      client.reset();
    });
  }
}

let panel = null;

/** Nodes whose `seed` is part of the stream's restart key. */
const FIXED_SEED_NODES = new Set(["PersonaPreviewRenderer", "PersonaLongLiveSampler"]);

app.registerExtension({
  name: "comfyui-persona.chat",
  // The frontend gives an INT named seed a "randomize" control, and a changed seed restarts the
  // stream: a node added from the library starts "fixed". This runs in the node's constructor,
  // before a saved workflow's values are applied, so a saved control stays as it was saved.
  nodeCreated(node) {
    if (!FIXED_SEED_NODES.has(node.comfyClass)) return;
    const control = node.widgets?.find((widget) => widget.name === "seed")?.linkedWidgets?.[0];
    if (control) control.value = "fixed";
  },
  async setup() {
    const manager = app.extensionManager;
    // Two installs of the pack would register the tab twice; the second one steps aside.
    if (!manager?.registerSidebarTab || manager.getSidebarTabs?.().some((tab) => tab.id === TAB_ID)) return;
    manager.registerSidebarTab({
      id: TAB_ID,
      icon: "pi pi-comments",
      title: "Persona",
      tooltip: "Persona chat: talk to the character and watch it act, live",
      type: "custom",
      render: (container) => {
        panel ??= new PersonaPanel();
        container.replaceChildren(panel.root);
        container.style.height = "100%";
        panel.connect();
      },
    });
  },
});
