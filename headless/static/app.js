// The headless chat page: wires the protocol client to the DOM. No build step.
import { SpeechPlayer } from "./audio_player.js";
import { PersonaClient } from "./persona_client.js";
import { DEFAULT_MEDIA, WebRTCMedia, transportLabel } from "./webrtc_media.js";

const QUICK_ACTIONS = [
  ["wave", "smile"], ["smile", null], ["nod", "neutral"], ["shake_head", "neutral"],
  ["sit", "neutral"], ["stand", "neutral"], ["bow", "neutral"], ["clap", "excited"],
  ["dance", "excited"], ["think", "thoughtful"], ["shrug", "confused"],
];

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(window.location.search);
const client = new PersonaClient({
  persona: params.get("persona"),
  token: params.get("token"),
  maxFps: params.get("max_fps") ? Number(params.get("max_fps")) : null,
});

// 1.1: `?scene=mira,bjorn` asks for a scene of those personas instead of one.
const sceneParam = (params.get("scene") ?? "").split(",").filter(Boolean);
if (sceneParam.length) client.scene = sceneParam;

const player = new SpeechPlayer();
// Media transport: "webrtc" negotiates WebRTC where the server and browser offer it (falling
// back to the WebSocket), "websocket" never offers. The user's choice (#media) is kept in
// localStorage; `?media=` overrides it for this page; otherwise DEFAULT_MEDIA.
const MEDIA_KEY = "persona.chat.media";
const MEDIA_CHOICES = ["webrtc", "websocket"];
const mediaChoice = $("media");
const pick = (value) => (MEDIA_CHOICES.includes(value) ? value : null);
mediaChoice.value = pick(params.get("media")) ?? pick(localStorage.getItem(MEDIA_KEY)) ?? DEFAULT_MEDIA;
const rtcVideo = $("rtc-video");
const rtc = new WebRTCMedia(client, rtcVideo, { enabled: mediaChoice.value === "webrtc" });
if (typeof RTCPeerConnection === "undefined") {
  mediaChoice.value = "websocket";
  mediaChoice.disabled = true;
  mediaChoice.title = "this browser has no WebRTC: the media come over the WebSocket";
}
mediaChoice.addEventListener("change", () => {
  localStorage.setItem(MEDIA_KEY, mediaChoice.value);
  rtc.setEnabled(mediaChoice.value === "webrtc");
});
window.personaRtc = rtc; // what the tests read: rtc.transport, await rtc.stats()
const canvas = $("video");
const context = canvas.getContext("2d");
const bubbles = new Map(); // reply_to → persona bubble (streamed replies fill it)
const actionIds = new Set(); // quick actions: their answer is the directive, no text unless dialogue
let vocabulary = { actions: [], expressions: [] };
let drawing = false;
let latestFrame = null;

function scrollToNewest() {
  // After the text is in: scrolling when an empty bubble is made clips the reply that follows.
  const history = $("history");
  history.scrollTop = history.scrollHeight;
}

function atNewest() {
  // Whether the reader follows the newest text (not scrolled up to read older bubbles).
  const history = $("history");
  return history.scrollHeight - history.scrollTop - history.clientHeight < 48;
}

function addBubble(role, text) {
  // The user's own message always brings the newest into view; an answer only while the
  // reader follows the newest (not scrolled up to read older bubbles).
  const follow = role === "user" || atNewest();
  const item = document.createElement("li");
  item.className = role;
  item.dir = "auto"; // Arabic, Hebrew: right to left, by the text's first strong letter
  item.textContent = text;
  $("history").append(item);
  if (follow) scrollToNewest();
  return item;
}

function actionLabel(directive) {
  const name = directive.action !== "idle" ? directive.action : directive.expression;
  return `[${name.replace("_", " ")}]`;
}

function personaBubble(replyTo) {
  let bubble = bubbles.get(replyTo);
  if (!bubble) {
    bubble = addBubble("persona", "");
    bubble.dataset.replyTo = replyTo ?? "";
    bubble.dataset.kind = actionIds.has(replyTo) ? "action" : "chat";
    bubbles.set(replyTo, bubble);
    renderPersona(bubble, { text: "", directives: null, done: false });
  }
  return bubble;
}

/** One persona bubble from what is known of its answer. A chat answer waits with "…" until
 * its text comes; an action's answer is its directive line (text only with dialogue). */
function renderPersona(bubble, { text, directives, done }) {
  const follow = atNewest();
  if (directives !== null && directives !== undefined) {
    bubble.dataset.directives = directives.length
      ? directives.map((d) => `${d.character ? `${castName(d.character)}: ` : ""}${d.action} · ${d.expression}`).join(" → ")
      : "(no action)";
  }
  const action = bubble.dataset.kind === "action";
  const settled = done || (action && bubble.dataset.directives !== undefined);
  bubble.replaceChildren();
  if (text) bubble.append(text);
  else if (!settled) bubble.append("…");
  if (bubble.dataset.directives !== undefined) {
    const line = document.createElement("span");
    line.className = "directives";
    line.textContent = bubble.dataset.directives;
    bubble.append(line);
  }
  bubble.dataset.text = text ?? "";
  bubble.dataset.done = String(settled);
  if (follow) scrollToNewest();
}

/** Redraw the conversation the server kept (`ready.history`), then what was sent since. */
function redrawHistory(history, flushed) {
  $("history").replaceChildren();
  bubbles.clear();
  for (const entry of history ?? []) {
    if (entry.role === "user") {
      if (entry.kind === "action") actionIds.add(entry.id);
      addBubble("user", entry.kind === "action" && entry.directives?.length ? actionLabel(entry.directives[0]) : entry.text);
    } else if (entry.character) {
      sceneLine(entry.reply_to, entry.character, entry.text); // a scene's line: its speaker's bubble
    } else {
      const bubble = personaBubble(entry.reply_to);
      bubble.dataset.kind = entry.kind;
      renderPersona(bubble, { text: entry.text, directives: entry.directives ?? null, done: entry.done });
    }
  }
  for (const message of flushed ?? []) {
    if (message.type === "chat") addBubble("user", message.text);
    else if (message.type === "action") addBubble("user", actionLabel(message.directive));
  }
  scrollToNewest();
}

function notice(text, choices = []) {
  const box = $("notice");
  const line = document.createElement("span");
  line.textContent = text;
  const buttons = choices.map(([label, id, act]) => {
    const button = document.createElement("button");
    button.type = "button";
    button.id = id;
    button.textContent = label;
    button.addEventListener("click", () => { box.replaceChildren(); box.hidden = true; act(); });
    return button;
  });
  box.replaceChildren(line, ...buttons);
  box.hidden = false;
}

function clearNotice() {
  $("notice").replaceChildren();
  $("notice").hidden = true;
}

function showError(message) {
  const line = document.createElement("div");
  line.textContent = `${message.code}: ${message.message}`;
  $("errors").replaceChildren(line);
}

function setState(state) {
  $("status-action").textContent = state.action;
  $("status-expression").textContent = state.expression;
  $("status-pose").textContent = state.pose;
  $("status-activity").textContent = state.speaking ? `${state.activity}, speaking` : state.activity;
  $("status-activity").dataset.activity = state.activity;
}

function renderQuickActions() {
  const known = new Set(vocabulary.actions);
  const expressions = new Set(vocabulary.expressions);
  const buttons = QUICK_ACTIONS.filter(([name]) => known.has(name) || expressions.has(name)).map(([name, expression]) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = name.replace("_", " ");
    button.dataset.action = name;
    button.addEventListener("click", () => {
      // An expression-only button ("smile") keeps the body idle.
      const directive = known.has(name)
        ? { action: name, expression: expression ?? "neutral", intensity: 0.7 }
        : { action: "idle", expression: name, intensity: 0.7 };
      if (client.ready?.scene && actingCharacter) directive.character = actingCharacter; // who does it (1.1)
      actionIds.add(client.action(directive));
      addBubble("user", actionLabel(directive));
    });
    return button;
  });
  $("quick-actions").replaceChildren(...buttons);
}

async function drawLatest() {
  // Decode only the newest frame: if decoding falls behind, older frames are skipped.
  drawing = true;
  while (latestFrame) {
    const frame = latestFrame;
    latestFrame = null;
    try {
      const bitmap = await createImageBitmap(new Blob([frame.payload], { type: "image/jpeg" }));
      if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
        canvas.width = bitmap.width;
        canvas.height = bitmap.height;
      }
      context.drawImage(bitmap, 0, 0);
      bitmap.close();
      canvas.dataset.frameIndex = String(frame.index);
      canvas.dataset.pts = String(frame.pts);
      player.noteVideo(frame.pts);
    } catch (error) {
      console.warn("could not decode a frame", error);
    }
  }
  drawing = false;
}

client.addEventListener("frame", (event) => {
  latestFrame = event.detail;
  if (!drawing) drawLatest();
});

client.addEventListener("audio", (event) => player.push(event.detail.pts, event.detail.payload));

rtc.addEventListener("transport", (event) => {
  const { transport } = event.detail;
  const badge = $("transport");
  badge.dataset.transport = transport;
  badge.textContent = transportLabel(event.detail);
  rtcVideo.hidden = transport !== "webrtc";
  canvas.hidden = transport === "webrtc";
});

client.addEventListener("ready", (event) => {
  const ready = event.detail;
  if (!ready.resumed) player.restart();
  player.setRate(ready.audio_rate);
  markCurrentPersona(ready.persona.id);
  // A resumed session may be recording still (a reload, a dropped connection): the server says.
  setRecording(Boolean(ready.recordings?.some((r) => r.state === "recording")));
  $("persona-name").textContent = ready.scene ? ready.scene.personas.map((p) => p.name).join(" & ") : ready.persona.name;
  $("persona-description").textContent = ready.scene
    ? `A scene: address one by name ("${ready.scene.personas[0].name}, wave"), or everyone.`
    : ready.persona.description;
  renderCast(ready);
  vocabulary = ready.vocabulary;
  renderQuickActions();
  setState(ready.state);
  redrawHistory(ready.history, client.flushed);
});

client.addEventListener("ended", () => {
  player.restart();
  notice("Your previous conversation has ended (the server restarted, or it was closed). This is a new one.");
});

client.addEventListener("in_use", (event) => {
  const other = event.detail.session;
  notice("That conversation is open in another tab, so this tab started a new one.", [
    ["Use that conversation here", "notice-use-here", () => { player.restart(); client.useSession(other); }],
  ]);
});

client.addEventListener("status", (event) => {
  const { state, code } = event.detail;
  const badge = $("connection");
  badge.dataset.state = state;
  badge.textContent = state === "refused" ? `refused (${code})` : state === "taken" ? "open in another tab" : state;
  // Stats describe a live stream: none while disconnected.
  $("metrics").hidden = state !== "ready";
  if (state !== "ready") $("metrics").textContent = "–";
  if (state === "taken") {
    $("errors").replaceChildren(); // the server's "resumed by another connection" says the same
    notice("This conversation is open in another tab.", [
      ["Use here", "notice-use-here", () => { player.restart(); client.takeOver(); }],
      ["Start a new conversation", "notice-new", () => { player.restart(); client.newSession(); }],
    ]);
  }
});

client.addEventListener("directives", (event) => {
  const { reply_to: replyTo, directives } = event.detail;
  const bubble = personaBubble(replyTo);
  // In a scene the lines come as replies of their own, one per speaker: this one holds the directives.
  const done = client.ready?.scene ? true : bubble.dataset.done === "true";
  renderPersona(bubble, { text: bubble.dataset.text, directives, done });
});

client.addEventListener("reply", (event) => {
  const { reply_to: replyTo, text, done, character } = event.detail;
  if (character) {
    sceneLine(replyTo, character, text);
    return;
  }
  renderPersona(personaBubble(replyTo), { text, directives: null, done });
});

client.addEventListener("state", (event) => {
  const { state } = event.detail;
  if (state.character) updateCast(state);
  if (!state.character || state.character === client.ready?.persona.id) setState(state);
});

// -- scenes (protocol 1.1) ---------------------------------------------------------------

let actingCharacter = null; // in a scene: who the quick actions go to

function castName(id) {
  return client.ready?.scene?.personas.find((p) => p.id === id)?.name ?? id;
}

function renderCast(ready) {
  const cast = $("cast");
  if (!ready.scene) {
    cast.hidden = true;
    cast.replaceChildren();
    return;
  }
  // A resumed session (a reconnect) keeps the character picked.
  if (!ready.resumed || !ready.scene.personas.some((p) => p.id === actingCharacter)) {
    actingCharacter = ready.scene.personas[0].id;
  }
  cast.replaceChildren(...ready.scene.personas.map((persona) => {
    const item = document.createElement("li");
    item.dataset.character = persona.id;
    item.dataset.speaking = "false";
    // The quick actions go to the character picked here (the first at start).
    const pick = document.createElement("button");
    pick.type = "button";
    pick.className = "cast-pick";
    pick.textContent = persona.name;
    pick.title = `Quick actions for ${persona.name}`;
    pick.setAttribute("aria-pressed", String(persona.id === actingCharacter));
    pick.addEventListener("click", () => {
      actingCharacter = persona.id;
      for (const other of cast.querySelectorAll(".cast-pick")) {
        other.setAttribute("aria-pressed", String(other === pick));
      }
    });
    const state = document.createElement("span");
    state.className = "cast-state";
    item.append(pick, state);
    return item;
  }));
  cast.hidden = false;
  for (const state of Object.values(ready.states ?? {})) updateCast(state);
}

function updateCast(state) {
  const item = document.querySelector(`#cast li[data-character="${CSS.escape(state.character)}"]`);
  if (!item) return;
  item.dataset.speaking = String(Boolean(state.speaking));
  item.querySelector(".cast-state").textContent = `${state.action} · ${state.pose}${state.speaking ? " · speaking" : ""}`;
}

/** One speaker's line in a scene: a bubble of its own, named. */
function sceneLine(replyTo, character, text) {
  const bubble = addBubble("persona", "");
  bubble.dataset.replyTo = replyTo ?? "";
  bubble.dataset.character = character;
  const speaker = document.createElement("span");
  speaker.className = "speaker";
  speaker.textContent = castName(character);
  bubble.append(speaker, text);
}

client.addEventListener("metrics", (event) => {
  const m = event.detail;
  if (!client.ready) return;
  const latency = m.latency_ms == null ? "–" : `${Math.round(m.latency_ms)} ms`;
  $("metrics").textContent = `${m.fps} fps · latency ${latency} · ${m.frames_sent} frames · ${m.dropped} dropped`;
});

client.addEventListener("error", (event) => showError(event.detail));

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("message");
  const text = input.value.trim();
  if (!text) return;
  $("errors").replaceChildren(); // errors stay visible until the next message
  if (client.chat(text) === null) return; // too long: the error says so, the text stays to edit
  addBubble("user", text);
  input.value = "";
});

$("reset").addEventListener("click", () => {
  player.stop();
  client.reset();
});

// -- voice, recording ------------------------------------------------------------------

document.addEventListener("pointerdown", () => player.resume(), { capture: true });
document.addEventListener("keydown", () => player.resume(), { capture: true });

$("mute").addEventListener("click", () => {
  const muted = $("mute").getAttribute("aria-pressed") !== "true";
  player.setMuted(muted);
  rtc.setMuted(muted);
  $("mute").setAttribute("aria-pressed", String(muted));
  $("mute").textContent = muted ? "Unmute" : "Mute";
});

let recording = false;
function setRecording(on) {
  recording = on;
  $("record").setAttribute("aria-pressed", String(on));
  $("record").textContent = on ? "Stop recording" : "Record";
}

$("record").addEventListener("click", () => {
  if (!recording) $("recording-link").hidden = true;
  client.record(!recording);
});

client.addEventListener("recording", (event) => {
  const message = event.detail;
  setRecording(message.on);
  if (message.reason) showError({ code: "recording", message: message.reason }); // why it stopped
  if (!message.on && message.url && message.frames > 0) { // no frame: no file was kept
    const link = $("recording-link");
    link.href = withToken(message.url);
    link.textContent = `Download recording (${(message.duration_ms / 1000).toFixed(1)} s)`;
    link.hidden = false;
  }
});

// -- persona gallery, card import ------------------------------------------------------

const token = params.get("token");
const withToken = (url) => (token ? `${url}?token=${encodeURIComponent(token)}` : url);

function galleryMessage(text, kind = "info") {
  $("gallery-message").textContent = text;
  $("gallery-message").dataset.kind = kind;
}

function markCurrentPersona(id) {
  for (const button of document.querySelectorAll("#personas button")) {
    button.setAttribute("aria-current", String(button.dataset.persona === id));
  }
}

async function loadPersonas() {
  let personas;
  try {
    const response = await fetch(withToken("/persona/personas"));
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    personas = await response.json();
  } catch (error) {
    galleryMessage(`could not list personas: ${error.message}`, "error");
    return;
  }
  const items = personas.map((persona) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.persona = persona.id;
    button.title = persona.description;
    const image = document.createElement("img");
    image.src = withToken(persona.portrait);
    image.alt = "";
    image.loading = "lazy";
    const name = document.createElement("span");
    name.textContent = persona.builtin ? persona.name : `${persona.name} (yours)`;
    button.append(image, name);
    button.addEventListener("click", () => switchPersona(persona.id));
    const pick = document.createElement("input");
    pick.type = "checkbox";
    pick.className = "scene-pick";
    pick.value = persona.id;
    pick.setAttribute("aria-label", `${persona.name} in a scene`);
    pick.addEventListener("change", () => {
      const at = scenePicks.indexOf(persona.id);
      if (at >= 0) scenePicks.splice(at, 1);
      if (pick.checked) scenePicks.push(persona.id); // left to right in the order ticked
    });
    item.append(button, pick);
    return item;
  });
  $("personas").replaceChildren(...items);
  if (client.ready) markCurrentPersona(client.ready.persona.id);
}

const scenePicks = []; // persona ids ticked for a scene, in the order ticked
$("start-scene").addEventListener("click", () => {
  const shown = new Set([...document.querySelectorAll("#personas .scene-pick:checked")].map((box) => box.value));
  const cast = scenePicks.filter((id) => shown.has(id));
  if (cast.length < 2 || cast.length > 4) {
    galleryMessage("a scene holds 2 to 4 personas: tick them first", "error");
    return;
  }
  galleryMessage(`scene: ${cast.join(", ")}`);
  player.restart();
  $("history").replaceChildren();
  bubbles.clear();
  clearNotice();
  client.newSession(null, cast); // a new session: hello.scene
});

function switchPersona(id) {
  if (client.ready?.persona.id === id && !client.ready?.scene) return;
  player.restart();
  $("history").replaceChildren();
  bubbles.clear();
  clearNotice();
  client.newSession(id); // a new session: hello.persona
}

async function importCard(file) {
  if (!file) return;
  galleryMessage(`importing ${file.name}…`);
  const form = new FormData();
  form.append("card", file, file.name);
  let response, body;
  try {
    response = await fetch(withToken("/persona/personas"), { method: "POST", body: form });
    body = await response.json();
  } catch (error) {
    galleryMessage(`import failed: ${error.message}`, "error");
    return;
  }
  if (response.status === 201) {
    const warnings = body.warnings ?? [];  // what the card lost on the way in (it still loaded)
    if (warnings.length) galleryMessage(`imported ${body.name}; warning: ${warnings.join("; ")}`, "warning");
    else galleryMessage(`imported ${body.name}`);
    await loadPersonas();
  } else {
    galleryMessage(`${body.code ?? response.status}: ${body.message ?? "import failed"}`, "error");
  }
}

$("card-file").addEventListener("change", (event) => {
  importCard(event.target.files[0]);
  event.target.value = "";
});
const drop = $("card-drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("dragging"); });
drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("dragging");
  importCard(event.dataTransfer.files[0]);
});

window.personaClient = client; // for debugging and the browser test
window.personaAudio = player; // the browser test reads player.stats
loadPersonas();
client.connect();
