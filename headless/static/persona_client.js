// Persona chat protocol v1 client (see docs/contracts/PROTOCOL.md). No DOM here: the
// headless page and the ComfyUI panel both import this module and render as they like.
//
//   const client = new PersonaClient({ url, persona, token, maxFps });
//   client.addEventListener("ready" | "directives" | "reply" | "state" | "metrics" |
//                           "error" | "pong" | "frame" | "audio" | "recording" | "status",
//                           (ev) => ev.detail);
//   client.connect(); client.chat("wave please"); client.action({action: "nod", ...});
//   // chat() sends nothing and returns null, with an "error" event (too_large), for a text
//   // over MAX_CHAT_CHARS: a page keeps what the user typed instead of losing it.
//   client.record(true) / client.record(false)   // server-side MP4; "recording" answers
//
// 1.1: "webrtc.answer" and "webrtc.state" events too, and `signal(message)` sends WebRTC
// signalling (webrtc_media.js negotiates; a client that never offers gets the media here).
//
// "audio" events carry speech packets: {index, pts, payload} with 16-bit LE mono PCM at
// `client.ready.audio_rate` Hz, pts on the same clock as the frames' (play with
// audio_player.js).
//
// Reconnects with backoff and resumes the session by id (kept in sessionStorage, so a
// reload of the same tab resumes too). A fatal error (unauthorized, busy) stops retrying.
//
// One conversation, one tab (protocol 1.1 `hello.takeover`):
// - a duplicated tab (its sessionStorage copied) asks with `takeover: false`; the server
//   answers `session_in_use` and this client starts a new session instead ("in_use" event,
//   `{session}`: the conversation left to the other tab; `useSession(id)` moves it here);
// - this tab coming back to its own session (a reconnect, a reload: a per-tab marker set at
//   `pagehide`) sends `takeover: true`;
// - a socket closed with 4000 (another connection took the session) never reconnects:
//   status "taken"; `takeOver()` moves it back, `newSession()` starts another;
// - a resume the server could not honour (the session expired, the server restarted) gives
//   an "ended" event (`{session}`) before the new session's "ready".
// The `ready` event's `client.flushed` lists the messages queued while disconnected and sent
// just after it (not in `ready.history`, which was made before them).

/** The protocol's limit on a chat `text`, in code points as the server counts them (an emoji
 *  is one, not the two UTF-16 units `String.length` sees). Equal to protocol.py's MAX_TEXT_CHARS. */
export const MAX_CHAT_CHARS = 4000;

const MEDIA_JPEG = 1;
const MEDIA_AUDIO = 2;
const HEADER_BYTES = 13; // u8 kind, u32 frame_index, u64 pts_ms (big-endian)

export function parseMediaFrame(buffer) {
  const view = new DataView(buffer);
  const kind = view.getUint8(0);
  const index = view.getUint32(1, false);
  const pts = Number(view.getBigUint64(5, false));
  return { kind, index, pts, payload: buffer.slice(HEADER_BYTES) };
}

export function defaultSocketUrl(base = window.location) {
  const scheme = base.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${base.host}/persona/ws`;
}

export class PersonaClient extends EventTarget {
  constructor({ url = defaultSocketUrl(), persona = null, token = null, maxFps = null,
                storageKey = "persona.session", storage = globalThis.sessionStorage,
                workflow = null, comfyClientId = null } = {}) {
    super();
    this.url = url;
    this.persona = persona;
    this.scene = null; // 1.1: a scene's persona ids (hello.scene) instead of one persona
    this.workflow = workflow; // an uploaded workflow's id (POST /persona/workflows): stream that graph
    this.comfyClientId = comfyClientId; // inside ComfyUI: whose canvas shows the runs
    this.token = token;
    this.maxFps = maxFps;
    this.storageKey = storageKey;
    this.storage = storage;
    this.ws = null;
    this.ready = null;
    this.stopped = false;
    this.attempt = 0;
    this.nextId = 1;
    this.pending = [];
    this.flushed = [];
    this.takeoverNext = this._cameBack(); // this tab left its session itself (reload, navigation)
    this.askedSession = null; // the session the last hello asked to resume
    this._reconnect = null; // the timer of a reconnect after the socket closed
    this._watchPageHide();
  }

  _remember(key, value) {
    try { if (value) this.storage?.setItem(key, value); } catch { /* no storage */ }
  }

  _recall(key) {
    try { return this.storage?.getItem(key) || null; } catch { return null; }
  }

  get _leftKey() { return `${this.storageKey}.left`; }

  _cameBack() {
    // Set at pagehide by this tab; a duplicated tab copies sessionStorage while the original
    // is still open, so it has no marker and must not take the conversation.
    try {
      const left = this.storage?.getItem(this._leftKey);
      this.storage?.removeItem(this._leftKey);
      return Boolean(left) && left === this.sessionId;
    } catch { return false; }
  }

  _watchPageHide() {
    if (typeof window === "undefined" || !window.addEventListener) return;
    window.addEventListener("pagehide", () => {
      try { if (this.ready && this.sessionId) this.storage?.setItem(this._leftKey, this.sessionId); } catch { /* no storage */ }
    });
    window.addEventListener("pageshow", (event) => {
      try { if (event.persisted) this.storage?.removeItem(this._leftKey); } catch { /* no storage */ }
    });
  }

  get sessionId() {
    try { return this.storage?.getItem(this.storageKey) || null; } catch { return null; }
  }

  set sessionId(value) {
    try {
      if (value) this.storage?.setItem(this.storageKey, value);
      else this.storage?.removeItem(this.storageKey);
    } catch { /* private mode: resume only within this page */ }
  }

  connect({ takeover = false } = {}) {
    if (takeover) this.takeoverNext = true;
    this.stopped = false;
    clearTimeout(this._reconnect);
    this._reconnect = null;
    // One socket at a time: a page shown again while a reconnect was pending must not open a
    // second one (the first would never say hello).
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) return;
    this._status("connecting");
    const ws = new WebSocket(this.url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => this._hello(ws);
    ws.onmessage = (event) => this._receive(event.data);
    ws.onclose = (event) => {
      if (this.ws !== ws) return; // a replaced socket: the current one may be ready already
      const wasReady = Boolean(this.ready);
      this.ready = null;
      this.ws = null;
      if (event.code === 4000) {
        // Another connection took this session: never take it back unasked (two tabs would
        // take it from each other forever). The page offers takeOver() or newSession().
        this.stopped = true;
        this.takeoverNext = false;
        this._status("taken", { code: event.code, session: this.sessionId });
        return;
      }
      if (this.stopped) { this._status("closed"); return; }
      if (wasReady) this.takeoverNext = true; // our own session: its old socket may linger on the server
      const delay = Math.min(8000, 250 * 2 ** this.attempt++);
      this._status("reconnecting", { delay, code: event.code });
      this._reconnect = setTimeout(() => { this._reconnect = null; if (!this.stopped) this.connect(); }, delay);
    };
  }

  /** Whether a socket is open or being opened, or a reconnect is pending. */
  get active() {
    return Boolean(this.ws) || this._reconnect != null;
  }

  close() {
    this.stopped = true;
    clearTimeout(this._reconnect); // a hidden page must not reconnect behind its back
    this._reconnect = null;
    this.ws?.close(1000);
  }

  /** Move the conversation open elsewhere (status "taken", or an "in_use" event's session) here. */
  useSession(sessionId = this.sessionId) {
    this.sessionId = sessionId;
    const old = this.ws;
    this.ws = null;
    old?.close(1000);
    this.connect({ takeover: true });
  }

  takeOver() { this.useSession(this.sessionId); }

  newSession(persona = this.persona, scene = null) {
    this.persona = scene ? null : persona;
    this.scene = scene;
    this.sessionId = null;
    this.takeoverNext = false;
    this.pending = []; // typed for the conversation being left, not for the new one
    const old = this.ws;
    this.ws = null;
    old?.close(1000);
    this.connect();
  }

  _hello(ws = this.ws) {
    if (ws !== this.ws) return; // a socket replaced before it opened
    const hello = { type: "hello", video: { format: "jpeg" } };
    if (this.scene?.length) hello.scene = this.scene;
    else if (this.persona) hello.persona = this.persona;
    this.askedSession = this.sessionId;
    if (this.sessionId) {
      hello.session = this.sessionId;
      hello.takeover = this.takeoverNext;
    }
    if (this.token) hello.token = this.token;
    if (this.maxFps) hello.video.max_fps = this.maxFps;
    if (this.workflow) hello.workflow = this.workflow;
    if (this.comfyClientId) hello.comfy_client_id = this.comfyClientId;
    ws?.send(JSON.stringify(hello));
  }

  _status(state, extra = {}) {
    this.dispatchEvent(new CustomEvent("status", { detail: { state, ...extra } }));
  }

  _receive(data) {
    if (data instanceof ArrayBuffer) {
      const frame = parseMediaFrame(data);
      if (frame.kind === MEDIA_JPEG) this.dispatchEvent(new CustomEvent("frame", { detail: frame }));
      else if (frame.kind === MEDIA_AUDIO) this.dispatchEvent(new CustomEvent("audio", { detail: frame }));
      return;
    }
    let message;
    try { message = JSON.parse(data); } catch { return; }
    if (message.type === "ready") {
      if (this.askedSession && message.session !== this.askedSession) {
        this.dispatchEvent(new CustomEvent("ended", { detail: { session: this.askedSession } }));
      }
      this.ready = message;
      this.attempt = 0;
      this.sessionId = message.session;
      this._remember(`${this.storageKey}.persona`, message.persona?.id);
      this.takeoverNext = true; // from now on a hello from this client is this tab coming back
      this._status("ready");
      this.flushed = this.pending.splice(0);
      for (const queued of this.flushed) this._send(queued);
    } else if (message.type === "error" && message.code === "session_in_use" && !this.ready) {
      // A duplicated tab: the conversation stays with the other tab; this one starts its own.
      const session = this.sessionId;
      this.sessionId = null;
      this.takeoverNext = false;
      // Same persona as the conversation left to the other tab (the page may have switched
      // it after load, so the URL does not say).
      this.persona = this.persona ?? this._recall(`${this.storageKey}.persona`);
      this.dispatchEvent(new CustomEvent("in_use", { detail: { session } }));
      this._hello();
      return;
    } else if (message.type === "error" && message.fatal) {
      this.stopped = true;
      if (message.code === "busy" || message.code === "unauthorized") this._status("refused", { code: message.code });
    } else if (message.type === "error" && message.code === "unknown_persona" && !this.ready) {
      this.persona = null; // fall back to the server's default persona
      this.scene = null;
      this.dispatchEvent(new CustomEvent("error", { detail: message }));
      this._hello();
      return;
    }
    this.dispatchEvent(new CustomEvent(message.type, { detail: message }));
  }

  _send(message) {
    if (this.ready && this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
    else this.pending.push(message);
    return message.id;
  }

  _id() { return `m${Date.now().toString(36)}-${this.nextId++}`; }

  chat(text) {
    const chars = [...text].length;
    if (chars > MAX_CHAT_CHARS) {
      const message = `your message is ${chars.toLocaleString("en")} characters; the limit is ` +
        `${MAX_CHAT_CHARS.toLocaleString("en")}, so nothing was sent`;
      this.dispatchEvent(new CustomEvent("error", { detail: { code: "too_large", message } }));
      return null;
    }
    return this._send({ type: "chat", id: this._id(), text });
  }

  action(directive) { return this._send({ type: "action", id: this._id(), directive }); }

  reset() { return this._send({ type: "reset", id: this._id() }); }

  resume() { return this._send({ type: "resume", id: this._id() }); }

  ping() { return this._send({ type: "ping", id: this._id() }); }

  record(on) { return this._send({ type: "record", id: this._id(), on: Boolean(on) }); }

  /** 1.1 WebRTC signalling (webrtc_media.js): sent now or never (an offer is for this socket's session). */
  signal(message) {
    if (!this.ready || this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }
}
