// Scenes in the Persona tab (protocol 1.1, docs/scenes.md): 2–4 personas in one stream.
//
// The tab (persona_panel.js) owns the connection and the video; this module owns what a scene
// adds to it, so the two change apart:
// - the cast: each character by name, with its action and pose, outlined while it speaks
//   (`state` messages carry `character`); click a name and the quick actions go to that one;
// - the lines: one bubble per speaker (`reply` with `character`), named; the directives bubble
//   names each directive's performer ("Mira: wave · smile → Bjorn: sit · neutral");
// - the picker: a box on each gallery card, and "Start a scene" (hello.scene, in the order ticked);
// - the canvas: streaming a graph that holds a Persona Scene node asks for that node's cast
//   (`canvasScene`), so the tab lists the same characters the graph renders.
// Addressing itself is the server's (persona/scene.py): the chat box sends the text as typed.
// ComfyUI also loads this file as an extension of its own; it only exports.

const SCENE_NODE = "PersonaScene";
const MIN_CAST = 2;
const MAX_CAST = 4;

const STYLE = `
.persona-panel .persona-cast { list-style: none; margin: 0; padding: 0; display: flex; flex-direction: row; flex-wrap: wrap; gap: .3rem;
  justify-content: center; flex: none; overflow: visible; }
.persona-panel .persona-cast[hidden] { display: none; }
.persona-panel .persona-cast li { max-width: none; padding: .15rem .35rem; border-radius: 6px; display: flex;
  flex-direction: column; align-items: center; gap: .05rem; border: 2px solid transparent; background: var(--comfy-input-bg, #333); }
.persona-panel .persona-cast li[data-speaking="true"] { border-color: #16a34a; }
.persona-panel .persona-cast .cast-state { font-size: .7rem; opacity: .8; }
.persona-panel .persona-cast .cast-pick[aria-pressed="true"] { background: #1d4ed8; color: #fff; }
.persona-panel li.persona .speaker { display: block; font-weight: 600; font-size: .75rem; }
.persona-panel[data-scene="true"] canvas { aspect-ratio: auto; }
.persona-panel[data-scene="true"] .status { display: none; } /* the cast shows each character's */
.persona-panel .gallery .scene-pick { display: flex; align-items: center; justify-content: center; gap: .2rem;
  font-size: .65rem; }
.persona-panel .scene-start { display: flex; justify-content: center; margin-top: .2rem; }
`;

/** A DOM element: `class` and `text` set those, other attributes as given; children appended. */
export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

/** Persona ids in a Persona Scene node's text: "mira, bjorn", or a scene file's JSON. */
export function parseCast(text) {
  const value = String(text ?? "").trim();
  if (value.startsWith("{")) {
    try {
      const personas = JSON.parse(value).personas;
      return Array.isArray(personas) ? personas.map(String) : [];
    } catch {
      return [];
    }
  }
  return value.split(/[\s,;]+/).filter(Boolean);
}

/** The cast of the first active Persona Scene node on `graph`, or null when it has none. The
 * server checks the ids (unknown, repeated, too many): its error is shown as any other. */
export function canvasScene(graph) {
  const node = (graph?.nodes ?? []).find((n) => n.type === SCENE_NODE && (n.mode ?? 0) === 0);
  if (!node) return null;
  const widget = node.widgets?.find((w) => w.name === "personas");
  const cast = parseCast(widget?.value);
  return cast.length ? cast : null;
}

export class SceneView {
  /** `panel`: the tab's PersonaPanel (its root, history, quick actions, gallery). */
  constructor(panel) {
    this.panel = panel;
    this.client = null;
    this.acting = null; // who the quick actions go to (the lead at start)
    this.picks = []; // persona ids ticked in the gallery, in the order ticked
    this.cast = element("ol", { class: "persona-cast", "data-testid": "persona-cast", hidden: "",
                                "aria-label": "Who is in the scene" });
    this.start = element("button", { type: "button", "data-testid": "persona-start-scene",
                                     title: "A scene of the ticked personas (2 to 4), left to right in the order ticked",
                                     text: "Start a scene" });
    panel.root.prepend(element("style", { text: STYLE }));
    panel.quick.before(this.cast);
    panel.gallery.after(element("div", { class: "scene-start" }, this.start));
    this.start.addEventListener("click", () => this.startPicked());
  }

  get ready() { return this.client?.ready ?? null; }

  name(id) {
    return this.ready?.scene?.personas.find((p) => p.id === id)?.name ?? id;
  }

  attach(client) {
    this.client = client;
    client.addEventListener("ready", (event) => this.onReady(event.detail));
    client.addEventListener("state", (event) => this.onState(event.detail.state));
    client.addEventListener("reply", (event) => {
      const { reply_to: replyTo, text, character } = event.detail;
      if (character) this.line(replyTo, character, text);
    });
    client.addEventListener("directives", (event) => this.nameDirectives(event.detail));
  }

  /** True when `state` is one character's of a scene, other than the lead's (the status row shows the lead). */
  ownsState(state) {
    return Boolean(state?.character) && state.character !== this.ready?.persona.id;
  }

  /** `directive` as the tab sends it: in a scene, done by the character picked in the cast. */
  decorate(directive) {
    if (this.ready?.scene && this.acting) directive.character = this.acting;
    return directive;
  }

  onReady(ready) {
    const scene = ready.scene;
    this.panel.root.dataset.scene = String(Boolean(scene));
    if (!scene) {
      this.cast.hidden = true;
      this.cast.replaceChildren();
      this.acting = null;
      return;
    }
    this.panel.name.textContent = scene.personas.map((p) => p.name).join(" & ");
    this.panel.name.title = `A scene: address one by name ("${scene.personas[0].name}, wave"), or everyone`;
    // A resumed session (the tab was hidden, the socket dropped) keeps the character picked.
    if (!ready.resumed || !scene.personas.some((p) => p.id === this.acting)) this.acting = scene.personas[0].id;
    this.cast.replaceChildren(...scene.personas.map((persona) => {
      const pick = element("button", { type: "button", class: "cast-pick", text: persona.name,
                                       title: `Quick actions for ${persona.name}`,
                                       "aria-pressed": String(persona.id === this.acting) });
      pick.addEventListener("click", () => {
        this.acting = persona.id;
        for (const other of this.cast.querySelectorAll(".cast-pick")) {
          other.setAttribute("aria-pressed", String(other === pick));
        }
      });
      return element("li", { "data-character": persona.id, "data-speaking": "false" }, pick,
                     element("span", { class: "cast-state" }));
    }));
    this.cast.hidden = false;
    for (const state of Object.values(ready.states ?? {})) this.onState(state);
    for (const button of this.panel.gallery.querySelectorAll("button[data-persona]")) {
      button.setAttribute("aria-current", String(scene.personas.some((p) => p.id === button.dataset.persona)));
    }
  }

  onState(state) {
    if (!state?.character) return;
    const item = this.cast.querySelector(`li[data-character="${CSS.escape(state.character)}"]`);
    if (!item) return;
    item.dataset.speaking = String(Boolean(state.speaking));
    item.dataset.action = state.action;
    item.querySelector(".cast-state").textContent =
      `${state.action} · ${state.pose}${state.speaking ? " · speaking" : ""}`;
  }

  /** One speaker's line: a bubble of its own, named. */
  line(replyTo, character, text) {
    const bubble = this.panel.addBubble("persona", "");
    bubble.dataset.replyTo = replyTo ?? "";
    bubble.dataset.character = character;
    bubble.dataset.done = "true";
    bubble.append(element("span", { class: "speaker", text: this.name(character) }), text);
  }

  /** In a scene, the directives bubble names who does what (the panel wrote it unnamed). */
  nameDirectives({ reply_to: replyTo, directives }) {
    if (!this.ready?.scene || !directives.length) return;
    const bubble = this.panel.bubbles.get(replyTo);
    const label = bubble?.querySelector(".directives");
    if (!label) return;
    const text = directives
      .map((d) => `${d.character ? `${this.name(d.character)}: ` : ""}${d.action} · ${d.expression}`).join(" → ");
    bubble.dataset.directives = text;
    bubble.dataset.done = "true"; // its lines come as bubbles of their own
    label.textContent = text;
    bubble.replaceChildren(label); // no "…": nobody speaks in this bubble
  }

  /** A tick box on a gallery card (the panel calls this for each card it lists). */
  pickable(item, persona) {
    const box = element("input", { type: "checkbox", value: persona.id, "aria-label": `${persona.name} in a scene` });
    box.checked = this.picks.includes(persona.id);
    box.addEventListener("change", () => {
      this.picks = this.picks.filter((id) => id !== persona.id);
      if (box.checked) this.picks.push(persona.id);
    });
    item.append(element("label", { class: "scene-pick", title: "Tick 2 to 4 for a scene" }, box, "scene"));
  }

  startPicked() {
    const shown = new Set([...this.panel.gallery.querySelectorAll(".scene-pick input:checked")].map((b) => b.value));
    const cast = this.picks.filter((id) => shown.has(id));
    if (cast.length < MIN_CAST || cast.length > MAX_CAST) {
      this.panel.galleryNote(`a scene holds ${MIN_CAST} to ${MAX_CAST} personas: tick them first (${cast.length} ticked)`,
                             "error");
      return;
    }
    this.panel.galleryNote(`scene: ${cast.join(", ")}`);
    this.panel.player?.restart();
    this.panel.history.replaceChildren();
    this.panel.bubbles.clear();
    this.panel.setConnection("connecting", "switching…");
    this.client?.newSession(null, cast); // hello.scene; the stream (workflow) stays as chosen
  }
}
