// WebRTC media for the chat page (protocol 1.1, docs/contracts/PROTOCOL.md "WebRTC media").
//
// When the server's `ready.features` lists "webrtc" and the browser has RTCPeerConnection,
// this asks for the video and the speech over WebRTC: it offers (after gathering its ICE
// candidates, so no trickle is needed), applies the `webrtc.answer`, and plays the tracks in
// a <video> element once `webrtc.state` says `media: "webrtc"`. Any failure (no support, a
// refused offer, a peer that fails or closes, a reconnect) leaves or puts the media back on
// the WebSocket, where the page draws JPEG frames on its canvas and plays PCM as before.
//
//   const media = new WebRTCMedia(client, videoElement);
//   media.addEventListener("transport", (ev) => ev.detail);  // {transport: "webrtc" | "websocket", codecs?, reason?}
//   media.stats()  // the receiving side's numbers (frames decoded, audio energy), for the page and tests

const JITTER_TARGET_MS = Number(new URLSearchParams(location.search).get("jitter") ?? 0);
const GATHER_LIMIT_MS = 3000; // offer with what was gathered by then (a host candidate comes at once)

export class WebRTCMedia extends EventTarget {
  constructor(client, video, { enabled = true } = {}) {
    super();
    this.client = client;
    this.video = video;
    this.enabled = enabled && typeof RTCPeerConnection !== "undefined";
    this.pc = null;
    this.transport = "websocket";
    this.frames = 0; // pictures the <video> element presented (requestVideoFrameCallback)
    this.offerId = null;
    client.addEventListener("ready", (event) => this._ready(event.detail));
    client.addEventListener("status", (event) => { if (event.detail.state !== "ready") this.stop("disconnected"); });
    client.addEventListener("webrtc.answer", (event) => this._answer(event.detail));
    client.addEventListener("webrtc.state", (event) => this._state(event.detail));
    client.addEventListener("error", (event) => {
      const { code, reply_to: replyTo } = event.detail;
      if (code === "webrtc_failed" || ((code === "bad_offer" || code === "webrtc_unavailable" || code === "rate_limited"
          || code === "invalid") && replyTo && replyTo === this.offerId)) {
        this.stop(code);
      }
    });
    this._countFrames();
  }

  _ready(ready) {
    this.stop("new session");
    if (!this.enabled || !ready.features?.includes("webrtc")) return;
    this.start(ready.webrtc ?? {}).catch((error) => {
      console.warn("WebRTC not started, media stay on the WebSocket", error);
      this.stop(String(error));
    });
  }

  async start({ ice_servers: iceServers = [] }) {
    const pc = new RTCPeerConnection({ iceServers });
    this.pc = pc;
    const stream = new MediaStream();
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    pc.ontrack = (event) => {
      if (JITTER_TARGET_MS && "jitterBufferTarget" in event.receiver) event.receiver.jitterBufferTarget = JITTER_TARGET_MS;
      stream.addTrack(event.track);
      if (this.video.srcObject !== stream) this.video.srcObject = stream;
    };
    pc.onconnectionstatechange = () => {
      if (pc === this.pc && pc.connectionState === "failed") this.stop("peer connection failed");
    };
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    if (pc !== this.pc) return; // stopped meanwhile
    this.offerId = `rtc-${Date.now().toString(36)}`;
    this.client.signal({ type: "webrtc.offer", id: this.offerId, sdp: pc.localDescription.sdp });
  }

  async _answer(message) {
    if (!this.pc || message.reply_to !== this.offerId) return;
    try {
      await this.pc.setRemoteDescription({ type: "answer", sdp: message.sdp });
    } catch (error) {
      console.warn("the server's answer was not accepted", error);
      this.stop("answer refused");
    }
  }

  _state(message) {
    if (message.media === "webrtc" && this.pc) {
      this._switch("webrtc", { codecs: message.codecs });
      this.video.play().catch(() => {
        // Autoplay with sound needs a user gesture: start muted, unmute at the first one.
        this.video.muted = true;
        this.video.play().catch(() => {});
        const unmute = () => { if (!this.userMuted) this.video.muted = false; };
        document.addEventListener("pointerdown", unmute, { capture: true, once: true });
        document.addEventListener("keydown", unmute, { capture: true, once: true });
      });
    } else if (message.media === "websocket") {
      this.stop(message.reason ?? message.state);
    }
  }

  setMuted(muted) {
    this.userMuted = Boolean(muted);
    this.video.muted = this.userMuted;
  }

  stop(reason) {
    const pc = this.pc;
    this.pc = null;
    this.offerId = null;
    if (pc) {
      if (pc.connectionState !== "closed" && this.client.ready) this.client.signal({ type: "webrtc.close" });
      pc.close();
    }
    this.video.srcObject = null;
    if (this.transport !== "websocket") this._switch("websocket", { reason });
  }

  _switch(transport, extra) {
    this.transport = transport;
    this.dispatchEvent(new CustomEvent("transport", { detail: { transport, ...extra } }));
  }

  _countFrames() {
    if (!this.video.requestVideoFrameCallback) return;
    const tick = () => {
      this.frames += 1;
      this.video.dataset.frames = String(this.frames);
      this.video.requestVideoFrameCallback(tick);
    };
    this.video.requestVideoFrameCallback(tick);
  }

  /** {transport, frames (presented), framesDecoded, audioEnergy (total, from inbound RTP), codecs}. */
  async stats() {
    const out = { transport: this.transport, frames: this.frames, framesDecoded: 0, audioEnergy: 0 };
    if (!this.pc) return out;
    (await this.pc.getStats()).forEach((report) => {
      if (report.type !== "inbound-rtp") return;
      if (report.kind === "video") out.framesDecoded = report.framesDecoded ?? 0;
      if (report.kind === "audio") out.audioEnergy = report.totalAudioEnergy ?? 0;
    });
    return out;
  }
}

function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, GATHER_LIMIT_MS);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
    });
  });
}
