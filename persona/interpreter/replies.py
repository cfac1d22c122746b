"""What the embedded persona says back: small talk answered from the card, feelings
acknowledged, actions confirmed, refusals that name the action, in the user's language.

No LLM: the reply is assembled from the card (its `lines`, description, personality and
scenario, with `{{char}}`/`{{user}}` filled in everywhere) and a few fixed lines. Choices
between a card's alternative lines are made by a hash of the text, so a reply is
deterministic. Order of the parts: greeting, what is being done (or why not), thanks,
then small talk; only what applies is said.

The card's third-person prose becomes first person for answers ("Mira works as the
welcome host" → "I work as the welcome host"): a few regular English rules, good for the
short sentences cards use, not a grammar.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from ..card import Persona
from ..conversation import fill_macros
from . import lexicon as lx
from . import lexicon_intl as li
from .base import Turn
from .languages import ENGLISH, OTHER, SUPPORTED, detect_language

__all__ = ["ReplyContext", "compose_reply", "persona_languages", "say_action"]

MAX_REPLY_CHARS = 2000
_SAY = {"shake_head": "shake my head", "sit": "sit down", "stand": "stand up", "idle": "relax"}
_USER = "you"


@dataclass
class ReplyContext:
    """What the parser made of one utterance, as the reply needs it."""

    text: str
    persona: Persona
    language: str = ENGLISH
    gloss: str = ""  # the English the parser read (the text itself for English)
    history: tuple[Turn, ...] = ()
    #: what is being done, in order: action names, or "face:<expression>" for a face alone
    acted: list[str] = field(default_factory=list)
    greeted: str | None = None  # "greeting" | "greeting_again" | "farewell"
    unsupported: list[tuple[str, str | None]] = field(default_factory=list)  # (request, suggestion)
    refused: list[str] = field(default_factory=list)
    negated: list[str] = field(default_factory=list)
    thanks: bool = False
    stopped: bool = False


def say_action(name: str | None) -> str:
    """An action in words, first person: "shake_head" → "shake my head"."""
    if not name:
        return ""
    return _SAY.get(name, name.replace("_", " "))


def _say_face(name: str) -> str:
    return name if name in lx.EXPRESSION_VERBS else f"look {name}"


def _say_acted(item: str) -> str:
    return _say_face(item[5:]) if item.startswith("face:") else say_action(item)


def _join(items: list[str], conjunction: str = " and ") -> str:
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    if conjunction == " and ":
        return ", ".join(items[:-1]) + " and " + items[-1]
    return conjunction.join(items)


def persona_languages(persona: Persona) -> tuple[str, ...]:
    """The languages this persona answers in: the card's
    `data.extensions.comfyui_persona.languages` when it lists some, else every language the
    embedded backend has lines for. English is always spoken (the card's own lines are)."""
    data = persona.card.get("data") if isinstance(persona.card.get("data"), dict) else {}
    ours = (data.get("extensions") or {}).get("comfyui_persona") if isinstance(data, dict) else None
    listed = ours.get("languages") if isinstance(ours, dict) else None
    if isinstance(listed, list) and listed:
        codes = [c.split("-")[0].lower() for c in listed if isinstance(c, str)]
        return tuple(dict.fromkeys([ENGLISH, *(c for c in codes if c in SUPPORTED)]))
    return SUPPORTED


def compose_reply(ctx: ReplyContext) -> str:
    """The persona's reply (see the module docstring)."""
    spoken = persona_languages(ctx.persona)
    if ctx.language in li.REPLIES and ctx.language in spoken:
        reply = _foreign(ctx)
    else:
        reply = _english(ctx)
        if ctx.language == OTHER or (ctx.language != ENGLISH and ctx.language not in spoken):
            names = [li.LANGUAGE_NAMES[c] for c in spoken]
            lead = (
                "Sorry, I only speak English."
                if len(names) == 1
                else f"Sorry, I didn't catch that: I speak {_join(names)}."
            )
            reply = lead if not (ctx.acted or ctx.stopped) else f"{lead} {reply}"
    reply = fill_macros(reply, ctx.persona.name, _USER)
    return " ".join(reply.split())[:MAX_REPLY_CHARS]


# -- English --------------------------------------------------------------------------------


def _choose(ctx: ReplyContext, options: tuple[str, ...], slot: str) -> str:
    if not options:
        return ""
    digest = hashlib.sha256(f"{ctx.persona.id}\0{slot}\0{ctx.text}".encode()).digest()
    return options[int.from_bytes(digest[:8], "big") % len(options)]


def _fill(template: str, **values: str) -> str:
    """Fill {action}/{request}/{alternative} by plain replacement: card lines come from user
    files, and a stray brace or an unknown {name} must not break the reply."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


def _english(ctx: ReplyContext) -> str:
    lines = ctx.persona.lines
    parts: list[str] = []
    if ctx.greeted:
        options = {"greeting": lines.greeting, "greeting_again": lines.greeting_again or lines.greeting}
        parts.append(_choose(ctx, options.get(ctx.greeted, lines.farewell), "greet"))
    acted = list(ctx.acted)
    if ctx.greeted and acted[:1] == ["wave"]:
        acted = acted[1:]  # the greeting's own wave
    done = _join([_say_acted(a) for a in acted if a != "idle"])
    if ctx.stopped:
        parts.append("Okay, I'll stop." if not done else f"Okay, I'll stop and {done}.")
    elif done:
        parts.append(
            _fill(_choose(ctx, lines.acknowledge, "ack"), action=done, request=done, alternative=done)
        )
    if ctx.unsupported:
        request, suggestion = ctx.unsupported[0]
        asked = _as_request(request)
        alternative = done or say_action(suggestion)
        if alternative:
            template = _choose(
                ctx, tuple(c for c in lines.cannot if "{request}" in c) or lines.cannot, "cannot"
            )
            if "{alternative}" not in template and not done:
                template += " I can {alternative}, though."
        else:
            template = (
                _choose(
                    ctx,
                    tuple(c for c in lines.cannot if "{alternative}" not in c and "{request}" in c),
                    "cannot",
                )
                or "I can't {request}, sorry."
            )
        if done and "{alternative}" in template:
            template = "I can't {request}, though."  # the alternative is already being done
        parts.append(_fill(template, request=asked, alternative=alternative, action=alternative))
    elif ctx.refused and not done:
        parts.append(_choose(ctx, lines.refusal, "refuse"))
    if ctx.thanks:
        parts.append(_choose(ctx, lines.thanks, "thanks"))
    if not parts and ctx.negated:
        parts.append(
            f"Okay, I won't {say_action(ctx.negated[0]) if ctx.negated[0] not in _FACES else _say_face(ctx.negated[0])}."
        )
    talk = _small_talk(ctx)
    if talk and not (ctx.unsupported or ctx.refused):
        parts.append(talk)
    if not parts:
        parts.append(_chitchat(ctx))
    return " ".join(p for p in parts if p)


_FACES = frozenset(
    "neutral smile laugh frown sad angry surprised confused thoughtful wink shy excited".split()
)

_SWAP = {
    "me": "you",
    "my": "your",
    "mine": "yours",
    "myself": "yourself",
    "i": "you",
    "i'm": "you're",
    "you": "me",
    "your": "my",
    "yours": "mine",
    "yourself": "myself",
    "you're": "I'm",
    "us": "you",
    "our": "your",
    "we": "you",
    "u": "me",
    "ur": "my",
}


def _as_request(request: str) -> str:
    """The user's request as the persona says it: pronouns turned round ("hug me" → "hug
    you"), long requests shortened to "do that"."""
    words = request.strip().rstrip("?.!").split()
    if not words or len(words) > 8:
        return "do that"
    return " ".join(_SWAP.get(w.lower(), w) for w in words)


# -- small talk -------------------------------------------------------------------------------

_INTENTS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE))
    for name, pattern in (
        ("abilities", r"\bwhat (else )?can (you|u) do\b|\bwhat (actions|moves|tricks) (can|do) (you|u)\b"),
        (
            "name",
            r"\bwhat('?s| is) (your|ur) name\b|\bwho (are|r) (you|u)\b|\bwhat (should|do|can) i call (you|u)\b"
            r"|\bwhat are you called\b|\bintroduce yourself\b|^\W*(your|ur) name\W*$",
        ),
        ("about", r"\btell me (a bit |a little |more )?about (yourself|you)\b|\bdescribe yourself\b"),
        (
            "how",
            r"\bhow (are|r) (you|u|things)\b|\bhow'?s it going\b|\bhow (have|'ve) you been\b"
            r"|\bhow (do|are) you feel(ing)?\b|\bhow('?s| is| was) your day\b|\bhow you doing\b"
            r"|\bwhat'?s up\b|\bhow goes it\b",
        ),
        (
            "likes",
            r"\bwhat (do|else do) (you|u) (like|love|enjoy)\b|\b(your|ur) hobb(y|ies)\b|\bdo you have (any )?hobbies\b"
            r"|\bwhat('?s| is| are) (your|ur) fav(ou?rite)?s?\b|\bwhat do you do for fun\b|\bwhat are you into\b"
            r"|\bwhat makes you happy\b",
        ),
        (
            "scenario",
            r"\bwhere are (you|we)\b|\bwhat are you (doing|up to)\b|\bwhat('?s| is) this place\b"
            r"|\bwhat do you do\b|\bwhat('?s| is) (your|ur) job\b|\bwhere do you (work|live)\b"
            r"|\bwhat('?s| is) going on\b",
        ),
    )
)

_FEELING_FRAME = re.compile(
    r"\b(i'?m|i am|im|i feel|i'?m feeling|feeling|i'?ve been|i have been|i got|i just|today was|my day was"
    r"|i had|i've had|i was)\b",
    re.IGNORECASE,
)
_FEELINGS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE))
    for name, pattern in (
        (
            "sad",
            r"\bnot (so |very |too |feeling )?(good|great|well|happy|okay|ok)\b|\b(sad|down|unhappy|depressed|upset"
            r"|miserable|heartbroken|awful|terrible|lonely|crying|cried|grieving|devastated|blue|gloomy|low)\b"
            r"|\b(bad|rough|hard|tough|horrible) (day|week|time)\b|\b(died|passed away|lost my|broke up|dumped|fired)\b",
        ),
        ("angry", r"\b(angry|mad|furious|annoyed|frustrated|pissed|irritated|livid|fed up)\b"),
        ("scared", r"\b(scared|afraid|nervous|anxious|worried|stressed|terrified|panicking|overwhelmed)\b"),
        ("tired", r"\b(tired|exhausted|sleepy|worn out|drained|knackered|burnt out|burned out)\b"),
        ("bored", r"\b(bored|boring)\b"),
        (
            "happy",
            r"\b(happy|great|good|wonderful|fantastic|amazing|excited|thrilled|glad|ecstatic|awesome|delighted"
            r"|over the moon|promoted|promotion|got the job|engaged|passed|won)\b",
        ),
    )
)
_FEELING_REPLIES = {
    "sad": "I'm sorry you're feeling down. Do you want to talk about it?",
    "angry": "That sounds really frustrating. What happened?",
    "scared": "That sounds stressful. I'm here if you want to talk it through.",
    "tired": "Sounds like you've had a long day. Take it easy for a bit.",
    "bored": "Then let's liven things up! Ask me to dance, or tell me something fun.",
    "happy": "That's wonderful! I'm really happy for you.",
}


def _small_talk(ctx: ReplyContext) -> str:
    text = ctx.gloss or ctx.text
    for name, pattern in _INTENTS:
        if pattern.search(text):
            return _answer(name, ctx)
    feeling = _feeling(text)
    return _FEELING_REPLIES[feeling] if feeling else ""


def _feeling(text: str) -> str:
    """The feeling the user tells of ("I'm sad": sad), in English or a gloss; "" for none."""
    if _FEELING_FRAME.search(text):
        for name, pattern in _FEELINGS:
            if pattern.search(text):
                return name
    return ""


def _chitchat(ctx: ReplyContext) -> str:
    return _choose(ctx, ctx.persona.lines.chitchat, "chat")


def _answer(intent: str, ctx: ReplyContext) -> str:
    persona = ctx.persona
    name = persona.name
    if intent == "name":
        intro = _first_person(_sentences(persona.description)[:1], name)
        return " ".join([f"I'm {name}.", *intro])
    if intent == "how":
        return "I'm doing well, thanks for asking! How about you?"
    if intent == "about":
        said = _first_person(_sentences(persona.description)[:2] or _sentences(persona.personality)[:1], name)
        return " ".join(said) or f"I'm {name}. Ask me anything!"
    if intent == "likes":
        texts = [
            *_sentences(persona.description),
            *_sentences(persona.personality),
            *_sentences(persona.backstory),
        ]
        liked = [s for s in texts if re.search(r"\b(lov|lik|enjoy|fond|favou?rite|hobb|passion)", s, re.I)]
        said = _first_person(liked[:2], name)
        return " ".join(said) or "I like a good chat, and I'm always up for a dance!"
    if intent == "scenario":
        said = _first_person(_sentences(persona.backstory)[:2], name)
        return " ".join(said) or "Just here, chatting with you!"
    if intent == "abilities":
        actions = [say_action(n) for n in persona.vocabulary().action_names if n != "idle"][:10]
        return f"I can {_join(actions)}, and pull all sorts of faces. Just ask!"
    return ""


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]


_VERB_FIXES = {
    "is": "am",
    "was": "was",
    "has": "have",
    "does": "do",
    "goes": "go",
    "isn't": "am not",
    "wasn't": "wasn't",
}


_ADVERBS = frozenset(
    "now also often always still usually never really just even sometimes rarely truly".split()
)
_OBJECT_AFTER = frozenset("and or to with a an the about that how patience . , ! ? ; :".split())
_TOKEN = re.compile(r"\{\{char\}\}'s|\{\{char\}\}|\w+(?:[-']\w+)*'?|[^\w\s]")
_YOU_VERBS = {"has": "have", "is": "are", "was": "were", "does": "do"}
_JOINERS = frozenset(", and but so then where when while because".split())


def _first_person(sentences: list[str], name: str) -> list[str]:
    """Third-person card prose as the persona would say it: "Mira loves tea and reads" →
    "I love tea and read"; "her days" → "my days"; "taught him patience" → "taught me patience"."""
    out = []
    names = {"{{char}}", "she", "he"}
    for sentence in sentences:
        if detect_language(sentence) != ENGLISH:  # these rules are English grammar: the card's own words
            out.append(fill_macros(sentence, name, _USER))
            continue
        sentence = fill_macros(sentence, name, _USER).replace(name, "{{char}}")
        sentence = re.sub(r"\byou (has|is|was|does)\b", lambda m: "you " + _YOU_VERBS[m.group(1)], sentence)
        for part in name.split():
            if len(part) >= 3 and part[:1].isupper():
                sentence = re.sub(r"\b" + re.escape(part) + r"\b", "{{char}}", sentence)
        tokens = _TOKEN.findall(sentence)
        said: list[str] = []
        verb_list = False  # inside "I wave, sit and dance": later verbs are ours too
        for i, tok in enumerate(tokens):
            low = tok.lower()
            nxt = tokens[i + 1].lower() if i + 1 < len(tokens) else "."
            prev = next((w for w in reversed(said) if w.lower() not in _ADVERBS), "")
            if low == "{{char}}'s":
                said.append("my")
            elif low in names and said and prev.lower() not in _JOINERS and low == "{{char}}":
                said.append("me")  # "taught {{char}} patience"
            elif low in names:
                said.append("I")
                verb_list = True
                continue
            elif low in ("him", "them") or (low == "her" and nxt in _OBJECT_AFTER):
                said.append("me")
            elif low in ("her", "his", "their"):
                said.append("my")
            elif low in ("herself", "himself", "themselves", "themself"):
                said.append("myself")
            elif verb_list and low in _ADVERBS:
                said.append(tok)
                continue
            elif verb_list and prev in ("I", ",", "and") and tok[:1].isalpha():
                said.append(_conjugate(tok))
                continue
            else:
                said.append(tok)
            if tok in (".", "!", "?", ";", ":") or low in ("who", "which", "that", "because", "but", "when"):
                verb_list = False
        text = " ".join(said)
        text = re.sub(r"\s+([,.!?;:])", r"\1", text)
        out.append(text[:1].upper() + text[1:])
    return out


def _conjugate(verb: str) -> str:
    """Third person singular → first person: "works" → "work", "is" → "am"."""
    lower = verb.lower()
    if lower in _VERB_FIXES:
        return _VERB_FIXES[lower]
    if lower.endswith("ies") and len(lower) > 4:
        return verb[:-3] + "y"
    if lower.endswith(("ches", "shes", "sses", "xes", "zes", "oes")):
        return verb[:-2]
    if lower.endswith("s") and not lower.endswith("ss") and len(lower) > 3:
        return verb[:-1]
    return verb


# -- other languages ----------------------------------------------------------------------------


def _foreign(ctx: ReplyContext) -> str:
    lang = ctx.language
    lines = li.REPLIES[lang]
    names = li.ACTION_NAMES[lang]
    faces = li.EXPRESSION_NAMES[lang]
    persona_name = ctx.persona.name

    def word(item: str) -> str:
        if item.startswith("face:"):
            return faces.get(item[5:], item[5:])
        return names.get(item, say_action(item))

    parts: list[str] = []
    if ctx.greeted == "farewell":
        parts.append(lines["farewell"])
    elif ctx.greeted == "greeting_again":  # the user has talked before: no introduction again
        parts.append(lines["greeting_again"])
    elif ctx.greeted:
        parts.append(lines["greeting"].replace("{name}", persona_name))
    acted = list(ctx.acted)
    if ctx.greeted and acted[:1] == ["wave"]:
        acted = acted[1:]
    acted = [a for a in acted if a != "idle"]
    if ctx.stopped:
        parts.append(lines["stop"])
    elif acted:
        parts.append(lines["ack"].replace("{action}", _join([word(a) for a in acted], lines["and"])))
    if ctx.unsupported:
        suggestion = ctx.unsupported[0][1]
        if suggestion and not acted:
            parts.append(lines["cannot"].replace("{alternative}", word(suggestion)))
        else:
            parts.append(lines["cannot_plain"])
    elif ctx.refused and not acted:
        parts.append(lines["cannot_plain"])
    if ctx.thanks:
        parts.append(lines["thanks"])
    if not parts and ctx.negated:
        parts.append(
            lines["negated"].replace(
                "{action}",
                word(ctx.negated[0]) if ctx.negated[0] not in _FACES else word("face:" + ctx.negated[0]),
            )
        )
    text = ctx.gloss
    if _INTENTS[1][1].search(text):
        parts.append(lines["name"].replace("{name}", persona_name))
    elif _INTENTS[3][1].search(text):
        parts.append(lines["how_are_you"])
    elif not parts:
        feeling = _feeling(text)
        parts.append(li.FEELING_REPLIES[lang][feeling] if feeling else lines["chitchat"])
    sep = "" if lang in ("ja", "zh") else " "
    return sep.join(parts)
