// Persona chat protocol v1 client (see docs/contracts/PROTOCOL.md). No DOM here: the
// headless page and the ComfyUI panel both import this module and render as they like.
//
//   const client = new PersonaClient({ url, persona, token, maxFps });
//   client.addEventListener("ready" | "directives" | "reply" | "state" | "metrics" |
//                           "error" | "pong" | "frame" | "audio" | "recording" | "status",
//                           (ev) => ev.detail);
//   client.connect(); client.chat("wave please"); client.action({action: "nod", ...});
//   client.record(true) / client.record(false)   // server-side MP4; "recording" answers
//
// "audio" events carry speech packets: {index, pts, payload} with 16-bit LE mono PCM at
// `client.ready.audio_rate` Hz, pts on the same clock as the frames' (play with
// audio_player.js).
//
// Reconnects with backoff and resumes the session by id (kept in sessionStorage, so a
// reload of the same tab resumes too). A fatal error (unauthorized, busy) stops retrying.

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

  connect() {
    this.stopped = false;
    this._status("connecting");
    const ws = new WebSocket(this.url);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => this._hello();
    ws.onmessage = (event) => this._receive(event.data);
    ws.onclose = (event) => {
      if (this.ws !== ws) return; // a replaced socket: the current one may be ready already
      this.ready = null;
      this.ws = null;
      if (this.stopped) { this._status("closed"); return; }
      const delay = Math.min(8000, 250 * 2 ** this.attempt++);
      this._status("reconnecting", { delay, code: event.code });
      setTimeout(() => { if (!this.stopped) this.connect(); }, delay);
    };
  }

  close() {
    this.stopped = true;
    this.ws?.close(1000);
  }

  newSession(persona = this.persona) {
    this.persona = persona;
    this.sessionId = null;
    const old = this.ws;
    this.ws = null;
    old?.close(1000);
    this.connect();
  }

  _hello() {
    const hello = { type: "hello", video: { format: "jpeg" } };
    if (this.persona) hello.persona = this.persona;
    if (this.sessionId) hello.session = this.sessionId;
    if (this.token) hello.token = this.token;
    if (this.maxFps) hello.video.max_fps = this.maxFps;
    if (this.workflow) hello.workflow = this.workflow;
    if (this.comfyClientId) hello.comfy_client_id = this.comfyClientId;
    this.ws?.send(JSON.stringify(hello));
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
      this.ready = message;
      this.attempt = 0;
      this.sessionId = message.session;
      this._status("ready");
      for (const queued of this.pending.splice(0)) this._send(queued);
    } else if (message.type === "error" && message.fatal) {
      this.stopped = true;
      if (message.code === "busy" || message.code === "unauthorized") this._status("refused", { code: message.code });
    } else if (message.type === "error" && message.code === "unknown_persona" && !this.ready) {
      this.persona = null; // fall back to the server's default persona
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

  chat(text) { return this._send({ type: "chat", id: this._id(), text }); }

  action(directive) { return this._send({ type: "action", id: this._id(), directive }); }

  reset() { return this._send({ type: "reset", id: this._id() }); }

  resume() { return this._send({ type: "resume", id: this._id() }); }

  ping() { return this._send({ type: "ping", id: this._id() }); }

  record(on) { return this._send({ type: "record", id: this._id(), on: Boolean(on) }); }
}
