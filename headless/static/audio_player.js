// Speech playback for the persona stream (PROTOCOL kind-2 packets) with Web Audio. No DOM.
//
//   const player = new SpeechPlayer();
//   player.setRate(ready.audio_rate);
//   player.noteVideo(frame.pts);        // each time a video frame is shown
//   player.push(packet.pts, packet.payload);  // 16-bit LE mono PCM, pts on the video clock
//   player.setMuted(true); player.stop();
//
// Sync: audio and video share one pts clock per session. Each shown frame tells us which
// AudioContext time that pts is on screen (smoothed); a packet is scheduled at its pts on
// that mapping. Packets that continue the previous one (within 60 ms) are butted against
// it, so a sentence plays gapless even when the mapping jitters.
//
// `stats` counts what was decoded, scheduled and played (the browser test reads them).

export class SpeechPlayer {
  constructor() {
    this.rate = 22050;
    this.context = null;
    this.gain = null;
    this.muted = false;
    this.offset = null; // AudioContext seconds minus video pts seconds
    this.nextEnd = 0; // context time the last scheduled packet ends
    this.lastPtsEnd = null; // pts (ms) where the last packet ends
    this.sources = new Set();
    this.stats = { packets: 0, samples: 0, sumSquares: 0, rms: 0, scheduled: 0, played: 0, late: 0 };
  }

  _ensureContext() {
    if (this.context) return this.context;
    const Context = globalThis.AudioContext || globalThis.webkitAudioContext;
    if (!Context) return null;
    this.context = new Context();
    this.gain = this.context.createGain();
    this.gain.gain.value = this.muted ? 0 : 1;
    this.gain.connect(this.context.destination);
    return this.context;
  }

  /** Call from a user gesture too: browsers start audio only after one (autoplay policy). */
  resume() {
    const context = this._ensureContext();
    if (context && context.state === "suspended") context.resume().catch(() => {});
  }

  setRate(rate) {
    if (Number.isFinite(rate) && rate >= 3000) this.rate = rate;
  }

  setMuted(muted) {
    this.muted = Boolean(muted);
    if (this.gain) this.gain.gain.setTargetAtTime(this.muted ? 0 : 1, this.context.currentTime, 0.01);
  }

  noteVideo(ptsMs) {
    const context = this._ensureContext();
    if (!context) return;
    const observed = context.currentTime - ptsMs / 1000;
    if (this.offset === null || Math.abs(observed - this.offset) > 0.5) this.offset = observed;
    else this.offset += 0.1 * (observed - this.offset);
  }

  push(ptsMs, payload) {
    const context = this._ensureContext();
    if (!context) return;
    const view = new DataView(payload); // 16-bit little-endian, whatever the host order
    const samples = new Float32Array(payload.byteLength >> 1);
    let sum = 0;
    for (let i = 0; i < samples.length; i++) {
      const value = view.getInt16(2 * i, true) / 32768;
      samples[i] = value;
      sum += value * value;
    }
    const stats = this.stats;
    stats.packets += 1;
    stats.samples += samples.length;
    stats.sumSquares += sum;
    stats.rms = Math.sqrt(stats.sumSquares / Math.max(1, stats.samples));
    if (!samples.length) return;

    const buffer = context.createBuffer(1, samples.length, this.rate);
    buffer.copyToChannel(samples, 0);
    const offset = this.offset ?? context.currentTime - ptsMs / 1000 + 0.15;
    let when = offset + ptsMs / 1000;
    const continues = this.lastPtsEnd !== null && Math.abs(ptsMs - this.lastPtsEnd) <= 60 && this.nextEnd > context.currentTime;
    if (continues) when = this.nextEnd;
    let skip = 0;
    if (when < context.currentTime) { // late: play the rest now rather than out of step
      skip = context.currentTime - when;
      when = context.currentTime;
      stats.late += 1;
      if (skip >= buffer.duration) { this.lastPtsEnd = ptsMs + (1000 * samples.length) / this.rate; return; }
    }
    const source = context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.gain);
    source.onended = () => { this.sources.delete(source); stats.played += 1; };
    source.start(when, skip);
    this.sources.add(source);
    stats.scheduled += 1;
    this.nextEnd = when + buffer.duration - skip;
    this.lastPtsEnd = ptsMs + (1000 * samples.length) / this.rate;
  }

  /** Silence now: `reset`, a persona switch, a reconnect. */
  stop() {
    for (const source of this.sources) {
      source.onended = null;
      try { source.stop(); } catch { /* not started yet */ }
    }
    this.sources.clear();
    this.nextEnd = 0;
    this.lastPtsEnd = null;
  }

  /** A new session: its pts clock starts again. */
  restart() {
    this.stop();
    this.offset = null;
  }
}
