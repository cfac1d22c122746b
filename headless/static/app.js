// The headless chat page: wires the protocol client to the DOM. No build step.
import { PersonaClient } from "./persona_client.js";

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

const canvas = $("video");
const context = canvas.getContext("2d");
const bubbles = new Map(); // client message id → persona bubble (for streamed replies)
const actionIds = new Set(); // quick actions get no reply unless they carry dialogue
let vocabulary = { actions: [], expressions: [] };
let drawing = false;
let latestFrame = null;

function addBubble(role, text) {
  const item = document.createElement("li");
  item.className = role;
  item.textContent = text;
  $("history").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

function personaBubble(replyTo) {
  let bubble = bubbles.get(replyTo);
  if (!bubble) {
    bubble = addBubble("persona", "…");
    bubble.dataset.replyTo = replyTo ?? "";
    bubbles.set(replyTo, bubble);
  }
  return bubble;
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
      actionIds.add(client.action(directive));
      addBubble("user", `[${name.replace("_", " ")}]`);
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

client.addEventListener("ready", (event) => {
  const ready = event.detail;
  $("persona-name").textContent = ready.persona.name;
  $("persona-description").textContent = ready.persona.description;
  vocabulary = ready.vocabulary;
  renderQuickActions();
  setState(ready.state);
  if (!ready.resumed) bubbles.clear();
});

client.addEventListener("status", (event) => {
  const { state, code } = event.detail;
  const badge = $("connection");
  badge.dataset.state = state;
  badge.textContent = state === "refused" ? `refused (${code})` : state;
});

client.addEventListener("directives", (event) => {
  const { reply_to: replyTo, directives } = event.detail;
  const bubble = personaBubble(replyTo);
  const list = document.createElement("span");
  list.className = "directives";
  list.textContent = directives.length
    ? directives.map((d) => `${d.action} · ${d.expression}`).join(" → ")
    : "(no action)";
  bubble.dataset.directives = list.textContent;
  if (actionIds.has(replyTo) && bubble.dataset.done === undefined) bubble.textContent = "";
  bubble.append(list);
});

client.addEventListener("reply", (event) => {
  const { reply_to: replyTo, text, done } = event.detail;
  const bubble = personaBubble(replyTo);
  const directives = bubble.querySelector(".directives");
  bubble.textContent = text || (done ? "" : "…");
  if (directives) bubble.append(directives);
  bubble.dataset.done = String(done);
});

client.addEventListener("state", (event) => setState(event.detail.state));

client.addEventListener("metrics", (event) => {
  const m = event.detail;
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
  addBubble("user", text);
  client.chat(text);
  input.value = "";
});

$("reset").addEventListener("click", () => client.reset());

window.personaClient = client; // for debugging and the browser test
client.connect();
