// WebRTC media for the chat page (protocol 1.1, docs/contracts/PROTOCOL.md "WebRTC media").
//
// When the server's `ready.features` lists "webrtc" and the browser has RTCPeerConnection,
// this asks for the video and the speech over WebRTC: it offers (after gathering its ICE
// candidates, so no trickle is needed), applies the `webrtc.answer`, and plays the tracks in
// a <video> element once `webrtc.state` says `media: "webrtc"`. Any failure (no support, a
// refused offer, a peer that fails or closes, a reconnect) leaves or puts the media back on
// the WebSocket, where the page draws JPEG frames on its canvas and plays PCM as before.
// A peer that failed or never connected (a network that dropped, UDP blocked for a while) is
// offered again after RETRY_MS, a few times (within the server's offers per minute); a peer
// that held a minute earns the tries back. A refused offer is not tried again.
//
//   const media = new WebRTCMedia(client, videoElement);
//   media.addEventListener("transport", (ev) => ev.detail);  // {transport: "webrtc" | "websocket", codecs?, reason?}
//   media.stats()  // the receiving side's numbers (frames decoded, audio energy), for the page and tests
//
// Playout delay under loss: a lost packet is recovered by a retransmission (NACK), one round
// trip later; until then the pictures after it cannot be decoded, and a receiver that plays
// them as soon as possible shows a stall of about a round trip each time. So once the
// receiver has asked for a retransmission, the tracks' `jitterBufferTarget` becomes the
// round trip plus a margin: the picture waits that long anyway and a recovered packet comes
// in time. Without losses for HOLD_MS it goes back to the browser's own (low) target, so a
// clean link keeps its latency. Measured with benchmarks/transport.py --browser --links impaired.
// `?jitter=MS` fixes the target instead (0: the browser's own), for measurements.

const JITTER_PARAM = new URLSearchParams(location.search).get("jitter");
const PLAYOUT = {
  checkMs: 500, // how often the receiver's statistics are read
  holdMs: 10000, // the raised target stays this long after the last retransmission request
  marginMs: 100, // beyond one round trip: noticing the loss, the NACK's own way, decoding
  maxMs: 1000, // never more (a link this bad needs a lower bitrate, not a longer wait)
};
// Lip-sync across the audio output (protocol `webrtc.playout`): the browser aligns the two
// tracks by the sender's clock (RTCP sender reports) up to where it hands them on: the sound
// to the audio device, the picture to the compositor. It counts neither what comes after (the
// sound's output latency, `media-playout` stats; the picture's wait from its delivery to its
// display, requestVideoFrameCallback against getSynchronizationSources) nor, within its own
// tolerance, the skew it leaves (`estimatedPlayoutTimestamp` of audio minus video). Together
// they say how much later the viewer hears a sound than it sees its picture; the page reports
// that and the server sends speech that much ahead (docs/server.md "WebRTC media").
const AUDIO_LAG = {
  checkMs: 500, // how often the receiver's statistics are read
  window: 10, // readings the lag is taken over (the median skew, the latency over the window)
  pictures: 48, // pictures the display wait is the median of
  stepMs: 3, // a new value is sent when it moved this much from the last one sent
  maxSkewMs: 30, // the browser's sync has not settled while its skew is larger (its own tolerance is about this): nothing sent
  maxMs: 200, // the protocol's bound (the pictures wait this long at most)
};
const GATHER_LIMIT_MS = 3000; // offer with what was gathered by then (a host candidate comes at once)
const RETRY_MS = [5000, 20000, 60000]; // after the 1st, 2nd, 3rd failed peer: offer again this much later
const HELD_MS = 60000; // a peer connected this long before it failed gives the tries back
// An offer with no answer by then failed (an answer lost, an offer dropped by a rate limit):
// the server answers at once once its own candidates are gathered (within a few seconds).
const ANSWER_MS = 15000;

// The transport a page uses unless the user chose otherwise: WebRTC, which falls back to the
// WebSocket where the browser or the server has none (docs/server.md "WebRTC media"); the chat
// page and the ComfyUI tab both read it.
export const DEFAULT_MEDIA = "webrtc";

// The transport badge's words for a "transport" event's detail.
export const transportLabel = ({ transport, codecs }) =>
  transport === "webrtc" ? `WebRTC${codecs?.video ? ` (${codecs.video})` : ""}` : "WebSocket";

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
    this.playoutTargetMs = null; // the tracks' jitterBufferTarget now (null: the browser's own)
    this.audioLagMs = null; // the audio lag last reported to the server (`webrtc.playout`)
    this.audioLag = null; // what it was made of, last computed: {outputMs, displayMs, skewMs, lag}
    this._watch = null;
    this._lagWatch = null;
    this._retry = null; // the timer of the next offer after a failed peer
    this._answerWait = null; // the timer of the answer to the offer in flight
    this._answered = false; // the server answered this peer's offer
    this.failures = 0; // failed peers since the session was ready (or since one held HELD_MS)
    this._connectedAt = null;
    client.addEventListener("ready", (event) => { this.failures = 0; this._ready(event.detail); });
    client.addEventListener("status", (event) => {
      if (event.detail.state === "ready") return;
      this._cancelRetry(); // the next ready offers anew
      this.stop("disconnected");
    });
    client.addEventListener("webrtc.answer", (event) => this._answer(event.detail));
    client.addEventListener("webrtc.state", (event) => this._state(event.detail));
    client.addEventListener("error", (event) => {
      const { code, reply_to: replyTo } = event.detail;
      if (code === "webrtc_failed" && !this._awaitingAnswer()) this._failed(code);
      else if ((code === "bad_offer" || code === "webrtc_unavailable" || code === "rate_limited" || code === "invalid")
          && replyTo && replyTo === this.offerId) {
        this.stop(code);
      }
    });
    this._countFrames();
  }

  _ready(ready) {
    this._cancelRetry();
    this.stop("new session");
    if (!this.enabled || !ready.features?.includes("webrtc")) return;
    this.start(ready.webrtc ?? {});
  }

  async start({ ice_servers: iceServers = [] }) {
    const pc = new RTCPeerConnection({ iceServers });
    this.pc = pc;
    this._answered = false;
    try {
      await this._offer(pc);
    } catch (error) {
      if (pc !== this.pc) return; // a newer peer took its place: that one goes on
      console.warn("WebRTC not started, media stay on the WebSocket", error);
      this.stop(String(error));
    }
  }

  async _offer(pc) {
    const stream = new MediaStream();
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    pc.ontrack = (event) => {
      stream.addTrack(event.track);
      if (this.video.srcObject !== stream) this.video.srcObject = stream;
    };
    pc.onconnectionstatechange = () => {
      if (pc === this.pc && pc.connectionState === "failed") this._failed("peer connection failed");
    };
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    if (pc !== this.pc) return; // stopped meanwhile
    this.offerId = `rtc-${Date.now().toString(36)}`;
    this.client.signal({ type: "webrtc.offer", id: this.offerId, sdp: pc.localDescription.sdp });
    clearTimeout(this._answerWait);
    this._answerWait = setTimeout(() => {
      if (pc === this.pc && this._awaitingAnswer()) this._failed("no answer to the offer");
    }, ANSWER_MS);
  }

  /** A peer whose offer has no answer yet: what the server says meanwhile about media (a
   * `webrtc.state` or `webrtc_failed`) is about the peer before this one (the server answers
   * messages in order). */
  _awaitingAnswer() {
    return Boolean(this.pc) && !this._answered;
  }

  async _answer(message) {
    const pc = this.pc;
    if (!pc || message.reply_to !== this.offerId) return;
    this._answered = true;
    clearTimeout(this._answerWait);
    try {
      await pc.setRemoteDescription({ type: "answer", sdp: message.sdp });
    } catch (error) {
      if (pc !== this.pc) return; // stopped meanwhile, or replaced by a newer peer
      console.warn("the server's answer was not accepted", error);
      this.stop("answer refused");
    }
  }

  _state(message) {
    if (message.media === "webrtc" && this.pc) {
      this._connectedAt = performance.now();
      this._switch("webrtc", { codecs: message.codecs });
      this._watchLoss(this.pc);
      this._watchAudioLag(this.pc);
      this.video.play().catch(() => {
        // Autoplay with sound needs a user gesture: start muted, unmute at the first one.
        this.video.muted = true;
        this.video.play().catch(() => {});
        const unmute = () => { if (!this.userMuted) this.video.muted = false; };
        document.addEventListener("pointerdown", unmute, { capture: true, once: true });
        document.addEventListener("keydown", unmute, { capture: true, once: true });
      });
    } else if (message.media === "websocket" && !this._awaitingAnswer()) {
      if (message.state === "failed") this._failed(message.reason ?? "failed");
      else this.stop(message.reason ?? message.state);
    }
  }

  /** Turn WebRTC on (negotiated now if the session is ready) or off (media back to the WebSocket). */
  setEnabled(enabled) {
    this.enabled = Boolean(enabled) && typeof RTCPeerConnection !== "undefined";
    if (!this.enabled) {
      this._cancelRetry();
      this.stop("turned off");
    }
    else if (!this.pc && this.client.ready) this._ready(this.client.ready);
  }

  setMuted(muted) {
    this.userMuted = Boolean(muted);
    this.video.muted = this.userMuted;
  }

  /** Keep the receivers' playout target at one round trip while retransmissions are asked for. */
  _watchLoss(pc) {
    clearInterval(this._watch);
    const fixed = JITTER_PARAM === null ? null : Number(JITTER_PARAM);
    if (fixed !== null) {
      this._setPlayoutTarget(pc, fixed > 0 ? fixed : null);
      return;
    }
    let nacks = 0;
    let lossAt = -Infinity;
    this._watch = setInterval(async () => {
      if (pc !== this.pc) { clearInterval(this._watch); return; }
      let rttMs = null, count = 0, pairId = null;
      const pairs = new Map();
      (await pc.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video") count = s.nackCount ?? 0;
        else if (s.type === "transport") pairId = s.selectedCandidatePairId ?? null;
        else if (s.type === "candidate-pair") pairs.set(s.id, s);
      });
      const pair = pairs.get(pairId) ?? [...pairs.values()].find((p) => p.nominated && p.state === "succeeded");
      if (pair?.currentRoundTripTime !== undefined) rttMs = pair.currentRoundTripTime * 1000;
      const now = performance.now();
      if (count > nacks) lossAt = now;
      nacks = count;
      const lossy = now - lossAt < PLAYOUT.holdMs && rttMs !== null;
      this._setPlayoutTarget(pc, lossy ? Math.min(PLAYOUT.maxMs, Math.round(rttMs + PLAYOUT.marginMs)) : null);
    }, PLAYOUT.checkMs);
  }

  /** Report how much later the sound is heard than its picture is seen (`webrtc.playout`). */
  _watchAudioLag(pc) {
    clearInterval(this._lagWatch);
    const readings = [], waits = [];
    const receiver = pc.getReceivers().find((r) => r.track.kind === "video");
    const median = (values) => [...values].sort((a, b) => a - b)[values.length >> 1];
    // A presented picture that is the one last delivered to the track: from delivery to display.
    const onFrame = (now, meta) => {
      if (pc !== this.pc) return;
      const source = receiver.getSynchronizationSources()[0];
      if (source && meta.rtpTimestamp !== undefined && source.rtpTimestamp === meta.rtpTimestamp) {
        waits.push(meta.expectedDisplayTime - (source.timestamp - performance.timeOrigin));
        if (waits.length > AUDIO_LAG.pictures) waits.shift();
      }
      this.video.requestVideoFrameCallback(onFrame);
    };
    if (receiver?.getSynchronizationSources && this.video.requestVideoFrameCallback) this.video.requestVideoFrameCallback(onFrame);
    this._lagWatch = setInterval(async () => {
      if (pc !== this.pc) { clearInterval(this._lagWatch); return; }
      let delay = null, count = 0, audio = null, video = null;
      (await pc.getStats()).forEach((s) => {
        if (s.type === "media-playout" && s.totalSamplesCount) { delay = s.totalPlayoutDelay; count = s.totalSamplesCount; }
        else if (s.type === "inbound-rtp" && s.estimatedPlayoutTimestamp) {
          if (s.kind === "audio") audio = s.estimatedPlayoutTimestamp; else video = s.estimatedPlayoutTimestamp;
        }
      });
      if (delay === null || audio === null || video === null) return; // a browser without them: nothing to say
      readings.push({ delay, count, skew: audio - video });
      if (readings.length > AUDIO_LAG.window) readings.shift();
      if (readings.length < AUDIO_LAG.window) return;
      const first = readings[0], last = readings[readings.length - 1];
      if (last.count <= first.count) return;
      const outputMs = ((last.delay - first.delay) / (last.count - first.count)) * 1000;
      const skewMs = median(readings.map((r) => r.skew));
      const displayMs = waits.length ? Math.max(0, median(waits)) : 0;
      if (Math.abs(skewMs) > AUDIO_LAG.maxSkewMs) return;
      const lag = Math.round(Math.min(AUDIO_LAG.maxMs, Math.max(0, outputMs - displayMs - skewMs)));
      this.audioLag = { outputMs, displayMs, skewMs, lag };
      if (this.audioLagMs !== null && Math.abs(lag - this.audioLagMs) < AUDIO_LAG.stepMs) return;
      if (this.client.signal({ type: "webrtc.playout", audio_lag_ms: lag })) this.audioLagMs = lag;
    }, AUDIO_LAG.checkMs);
  }

  _setPlayoutTarget(pc, ms) {
    if (ms === this.playoutTargetMs) return;
    for (const receiver of pc.getReceivers()) {
      if (!("jitterBufferTarget" in receiver)) continue;
      try {
        receiver.jitterBufferTarget = ms;
      } catch (error) {
        console.warn("jitterBufferTarget not set", error);
      }
    }
    this.playoutTargetMs = ms;
  }

  /** The peer failed or never connected: media back on the WebSocket, and a later offer. */
  _failed(reason) {
    if (!this.pc) return; // already stopped (the server's error and state both say it)
    const held = this._connectedAt !== null && performance.now() - this._connectedAt >= HELD_MS;
    this.stop(reason);
    this.failures = held ? 1 : this.failures + 1;
    if (this.failures > RETRY_MS.length) {
      console.info(`WebRTC failed ${this.failures} times: media stay on the WebSocket for this session`);
      return;
    }
    const delay = RETRY_MS[this.failures - 1];
    console.info(`WebRTC: offering again in ${delay / 1000} s`);
    this._retry = setTimeout(() => {
      this._retry = null;
      if (this.enabled && !this.pc && this.client.ready) this._ready(this.client.ready);
    }, delay);
  }

  _cancelRetry() {
    clearTimeout(this._retry);
    this._retry = null;
  }

  stop(reason) {
    this._connectedAt = null;
    clearTimeout(this._answerWait);
    clearInterval(this._watch);
    clearInterval(this._lagWatch);
    this._watch = null;
    this._lagWatch = null;
    this.audioLagMs = null;
    this.audioLag = null;
    this.playoutTargetMs = null;
    const pc = this.pc;
    this.pc = null;
    this.offerId = null;
    if (pc) {
      console.info(`WebRTC media stopped: ${reason}`); // why the media went (back) to the WebSocket
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
