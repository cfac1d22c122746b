"""Whole-utterance frames the clause parser cannot see one clause at a time.

Each frame is a sentence *structure*, not a phrase list, so one rule covers a family:

- corrections: "no, I meant X, not Y", "X... no wait, Y", "make that Y instead" → only Y;
- an action noun in a wish or evaluation frame ("a nod would be great", "waiting for your
  bow", "I'd appreciate a nod", "feel like dancing?") → that action;
- modal suggestions in front of an imperative ("maybe you ought to", "you look like you need
  to", "don't you want to", "I wonder if you could") → stripped like a polite filler;
- words that only look like actions in their structure ("point taken", "move on to another
  topic", "can you stand spicy food?", "back from a walk", "salsa dancing is my hobby").

`rewrite` turns the (English or glossed) utterance into text the clause parser reads;
`suggestion_prefix` is called by the parser's filler stripping. Regular expressions over
the lower-cased text: what they match is small and fixed, and a tagger would cost more
than the whole parser's latency budget.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from . import lexicon as lx

#: Action nouns (and their gerunds) → the imperative the parser reads for them.
_NOUNS: dict[str, str] = {
    "nod": "nod", "nods": "nod", "bow": "bow", "bows": "bow", "curtsy": "bow", "wave": "wave", "waves": "wave",
    "clap": "clap", "applause": "clap", "round of applause": "clap", "dance": "dance", "jig": "dance",
    "boogie": "dance", "walk": "take a walk", "stroll": "take a walk", "shrug": "shrug",
    "look around": "look around", "look round": "look around", "seat": "sit down",
    "shake of the head": "shake your head", "shake of your head": "shake your head", "head shake": "shake your head",
    "headshake": "shake your head",
}
_GERUNDS: dict[str, str] = {
    "dancing": "dance", "walking": "take a walk", "clapping": "clap", "waving": "wave", "nodding": "nod",
    "bowing": "bow", "shrugging": "shrug",
}
_NOUN_RE = "|".join(sorted(map(re.escape, _NOUNS), key=len, reverse=True))
_GERUND_RE = "|".join(sorted(map(re.escape, _GERUNDS), key=len, reverse=True))
_ADJ = (
    r"(?:(?:little|quick|short|small|big|deep|gentle|nice|proper|brief|tiny|good|slow|long|friendly|polite|"
    r"cheeky|cute|graceful|final|wee|lil|happy|solemn)\s+){0,2}"
)
_NP = r"(?:a|an|your|that|one|some|another|ur)\s+" + _ADJ + r"(?P<n>" + _NOUN_RE + r")(?:\s+of\s+yours)?\b"
_FRAMES = (
    # "a nod would be great", "your bow would make this complete", "a little dance might cheer me up"
    re.compile(_NP + r"\s+(?:would|might|could|'d|will|should)\b(?!\s+have\b)"),
    re.compile(r"^(?:perhaps\s+|maybe\s+)?(?P<g>" + _GERUND_RE + r")\s+(?:would|might|could)\b(?!\s+have\b)"),
    # "the audience is waiting for your bow", "we're all hoping for a wave"
    re.compile(r"\b(?:waiting|wait|waits|ready|hoping|longing|dying|begging|asking|calling)\s+for\s+" + _NP),
    # "I'd really appreciate a nod", "we would love a dance", "your fans would love a wave"
    re.compile(r"\b(?:i'd|i\s+would|we'd|we\s+would)\s+(?:\w+\s+)?(?:appreciate|love|like|enjoy|welcome)\s+" + _NP),
    re.compile(r"(?:^|\b(?:your|ur|the|all\s+the|all\s+your)\s+(?:\w+\s+)?(?:fans|audience|crowd|viewers|guests|kids|friends|"
               r"followers|chat|people)|\b(?:everyone|everybody|they|people|y'all))\s+(?:would|'d|will|might)\s+(?:\w+\s+)?"
               r"(?:appreciate|love|like|enjoy|welcome)\s+" + _NP),
    # "you've earned a bow", "you deserve a little dance", "is it too much to ask for a wave?"
    re.compile(r"\b(?:you've|you\s+have|you|you've\s+really|you\s+really|you\s+totally|you\s+so)\s+(?:earned|deserve|deserved)"
               r"\s+(?:yourself\s+)?" + _NP),
    re.compile(r"\b(?:ask|asked)\s+(?:you\s+)?for\s+" + _NP),
    # "I could really use a nod right now", "we could do with a little dance"
    re.compile(r"\b(?:i|we)\s+(?:could|can)\s+(?:really\s+|sure\s+|totally\s+|definitely\s+|honestly\s+)?"
               r"(?:use|do\s+with|go\s+for)\s+" + _NP),
    # "what about a bow for the audience?", "how about a little wave?"
    re.compile(r"^(?:so\s+|well\s+|and\s+)?(?:what|how)\s+about\s+" + _NP),
    # "feel like dancing?", "fancy a dance?", "care for a stroll?" (asked of the persona, not "I feel like")
    re.compile(
        r"(?:^|[,.!?…]\s*|\byou\s+)(?:feel\s+like|fancy|in\s+the\s+mood\s+for|care\s+for|up\s+for)\s+"
        r"(?:(?:a|an|some|another|one)\s+)?" + _ADJ + r"(?:(?P<g>" + _GERUND_RE + r")|(?P<n>" + _NOUN_RE + r"))\b"
    ),
    # "give me a shake of the head", "say hi with a wave", "have a look around"
    re.compile(r"\bgive\s+(?:me|us|them|everyone|him|her)\s+" + _NP),
    re.compile(r"\b(?:say|said)\s+(?:hi|hello|hey|bye|goodbye|bye-bye|thanks|yes|no)\s+(?:\w+\s+){0,3}?with\s+" + _NP),
    # "send them off with a bow", "see the guests out with a wave"
    re.compile(r"^(?:please\s+)?(?:see|send|wave|show)\s+(?:them|him|her|us|everyone|everybody|the\s+\w+|our\s+\w+)\s+"
               r"(?:off|out)\s+with\s+" + _NP),
    # "greet the audience with a bow", "wave the crowd with a bow" (a glossed "saluez ... avec")
    re.compile(r"^(?:please\s+)?(?:greet|salute|welcome|wave)\s+(?:to\s+|at\s+)?(?:the|your|our|my|all|everyone|everybody)"
               r"(?:\s+\w+){0,2}?\s+with\s+" + _NP),
    re.compile(r"\bhave\s+a\s+(?P<n>look)(?:\s+around|\s+round)?\s*(?:[.!?]|$)"),
)
_ATTENTION = re.compile(r"^\s*(?:hey|oi|yo|so|ok|okay|well)\b[,!.\s]*")
_CLAUSE_END = re.compile(r"[.!?;…]+|,\s|\s(?:and|then|and\s+then)\s")

_CORRECTION = re.compile(
    r"(?P<lead>^|.*?[,.;!?…]\s*|.*?\s)(?:(?:no|nah|sorry|oops|actually|wait)[,.\s]+)*"
    r"(?P<mark>no,?\s+wait|wait,?\s+no|scratch\s+that|make\s+that|on\s+second\s+thoughts?|i\s+meant|i\s+mean|i\s+said|"
    r"actually(?=,?\s+[^,.!?]+\binstead\b))"
    r"\b[,:\s]*(?P<x>.+)$"
)
_CORRECTION_TAIL = re.compile(r"(?:,?\s+(?:not|instead\s+of|rather\s+than)\s+.*|\s+instead\b.*)$")
#: "a smile-free nod" → "a nod without smile" (the clause parser splits at "without").
_FREE_OF = re.compile(r"\b([a-z]+)-free\b(?:\s+(?!(?:and|but|then|please|or|with|for|to|at|now)\b)([a-z]+)\b)?")
_TURN_VERB = re.compile(r"\b(turn|look|face|spin|rotate)\b")

_SUGGESTION = re.compile(
    r"^(?:(?:maybe|perhaps|possibly|probably|honestly|i\s+think|i\s+guess|i\s+reckon)\s+,?\s*)?"
    r"(?:"
    r"(?:you|u)\s+(?:really\s+|definitely\s+|seriously\s+|honestly\s+|probably\s+|totally\s+)?(?:should|ought\s+to|oughta|could|might|may|need\s+to|must|'d\s+better)(?:\s+(?:want\s+to|wanna))?"
    r"|(?:you\s+)?(?:look|looks|seem|seems)\s+like\s+(?:you\s+)?(?:need|could\s+use|could\s+do\s+with|should)(?:\s+to)?"
    r"|(?:don't|dont|wouldn't|wouldnt|won't|wont)\s+(?:you|u)\s+(?:want|wanna|like|care|feel\s+like)(?:\s+to)?"
    r"|(?:shouldn't|shouldnt|can't|cant|couldn't|couldnt)\s+(?:you|u)"
    r"|i\s+(?:was\s+|am\s+|'m\s+)?wonder(?:ing)?\s+(?:if|whether)\s+(?:you|u)\s+(?:could|might|would|can|will|'d)"
    r"|(?:i\s+was|i'm|i\s+am|we\s+were|we're)\s+hoping\s+(?:that\s+)?(?:you'd|you'll|(?:you|u)\s+(?:would|could|might|will|can))"
    r"|(?:it\s+)?(?:might|may|would|could)\s+be\s+(?:a\s+)?(?:good|great|nice|wise|smart|lovely)(?:\s+idea)?\s+(?:for\s+you\s+)?to"
    r"|it'd\s+be\s+(?:a\s+)?(?:good|great|nice|wise|lovely)(?:\s+idea)?\s+(?:for\s+you\s+)?to"
    r")\s+(?:please\s+)?"
)
_STATE = frozenset("be been feel look seem have had like love enjoy know understand remember agree mind care".split())

_NOT_ACTION_RES = (
    # "point taken", "fair point", "that's the point": the noun "point", not pointing
    re.compile(
        r"\b(?:(?:fair|good|valid|great|excellent|interesting|strong|moot|main|whole|the|my|your|his|her|a|no|"
        r"any|that|this)\s+point\b(?!\s+(?:at|to|towards|toward)\b)|point\s+(?:taken|made|noted))"
    ),
    # "just got back from a walk", "back from my dance class": where the speaker has been
    re.compile(r"\bback\s+from\s+(?:a|an|my|the|our|this|that|his|her)\s+" + _ADJ + r"(?:\w+\s+)?(?:" + _NOUN_RE + r")\w*"),
)
#: "let's move on to another topic", "moving on": the conversation moves, not the persona.
_MOVE_ON = re.compile(r"\bmov(?:e|ing|ed)\s+on\b(?!\s+over)")
#: "can you stand spicy food?", "I can't stand rain": bearing something, not standing up.
_BEAR = re.compile(
    r"\b(can|can't|cant|cannot|could|couldn't|couldnt)\s+((?:you|u|i|we|they|he|she)\s+)?((?:even|really|just)\s+)?"
    r"stand(?=\s+(?!up\b|still\b|there\b|here\b|on\b|by\b|next\b|beside\b|near\b|in\b|at\b|straight\b|tall\b|"
    r"upright\b|back\b|for\b|with\b|please\b|now\b|again\b|and\b|then\b|to\b|behind\b|facing\b|around\b|"
    r"guard\b|aside\b|firm\b|very\b|really\b|quietly\b|properly\b)\w)"
)
#: "salsa dancing is my weekend hobby": an activity as the subject of a sentence about it.
_TOPIC = re.compile(r"^(?:\w+\s+)?(?:" + _GERUND_RE + r")\s+(?=(?:is|was|has\s+been|'s)\s+(?:my|our|a|the|his|her|their|so|really)\b)")
_FACE_IDIOMS = {
    "turn that frown upside down": "smile",
    "turn your frown upside down": "smile",
    "put on a happy face": "smile",
    "put a smile on that face": "smile",
}
_FACE_IDIOM_RE = re.compile("|".join(map(re.escape, _FACE_IDIOMS)))
_OF_YOURS = re.compile(r"\bthat\s+(\w+)\s+of\s+yours\b")
_REPEATED_VERY = re.compile(r"\b(" + "|".join(sorted(lx.VERY)) + r"),\s+(?=\1\b)")
_FIRST_PERSON = re.compile(r"^\s*(?:i|we|my|our|i've|i'm|we've|we're|just)\b")
_ACTION_EMOJI = "".join(e for e, v in lx.EMOJI.items() if len(e) == 1 and not v.startswith("look") and v not in (
    "smile", "laugh", "wink", "frown", "keep a straight face"))
_ACTION_EMOJI_RE = re.compile("[" + re.escape(_ACTION_EMOJI) + "]") if _ACTION_EMOJI else None


#: A past tense that is a hypothetical's, not a report: "I'd appreciate it if you shook your
#: head", "what if you stood up", "if only you danced", "it's time you got up", "it's about
#: time somebody clapped for me". The verb is read as its base form after "you would" (after
#: "time": "you"), so the request frames of `cues` see a request, not news.
_SUBJUNCTIVE = re.compile(
    r"\b(?P<lead>if|if\s+only|suppose|supposing)\s+(?:you|u)\s+(?P<adv>(?:just|only|maybe|perhaps|finally|really)\s+)?"
    r"(?P<v>[a-z]+)\b"
    r"|\b(?P<time>time)\s+(?:you|u|somebody|someone|ya)\s+(?P<adv2>(?:just|finally|really|actually)\s+)?(?P<v2>[a-z]+)\b"
)
_IRREGULAR_BASE = {
    "stood": "stand", "sat": "sit", "shook": "shake", "rose": "rise", "got": "get", "took": "take", "gave": "give",
    "went": "go", "made": "make", "did": "do", "threw": "throw", "held": "hold", "spun": "spin", "came": "come",
    "ran": "run", "thought": "think", "put": "put", "kept": "keep", "bent": "bend", "knelt": "kneel", "sang": "sing",
    "swung": "swing", "led": "lead", "broke": "break", "drew": "draw", "wrote": "write", "showed": "show",
}


def _base_form(v: str) -> str | None:
    """The base form of a past tense ("shook" → "shake", "clapped" → "clap", "waved" →
    "wave", "bowed" → "bow"), or None when `v` is no past tense."""
    if v in _IRREGULAR_BASE:
        return _IRREGULAR_BASE[v]
    if len(v) < 5 or not v.endswith("ed") or v in ("need", "feed", "speed", "seed", "breed", "bleed", "proceed"):
        return None
    core = v[:-2]
    vowels = "aeiou"
    if v.endswith("ied"):
        return v[:-3] + "y"
    if core[-1] == core[-2] and core[-1] not in vowels:
        return core if core[-1] in "ls" else core[:-1]  # "called", "kissed"; "clapped", "nodded"
    if core.endswith(("c", "v", "z", "g", "s", "u")) and not core.endswith(("ss", "sh")):
        return core + "e"  # "danced", "waved", "raised", "judged"
    one_syllable = len(re.findall("[aeiouy]+", core)) == 1
    if one_syllable and core[-1] not in "wyx" and core[-2] in vowels and core[-3:-2] and core[-3] not in vowels:
        return core + "e"  # "smiled", "faced", "stared" (not "looked", "waited", "bowed", "listened")
    return core


#: A glossed verb-final conditional ("wenn du herumlaufen würdest" → "if you walk around
#: would"): the modal goes back after "you".
_VERB_FINAL_IF = re.compile(r"\bif\s+you\s+(?P<x>[a-z][^,.!?;]*?)\s+(?P<m>would|could)\b(?!\s+(?:be|have)\b)")


_MODAL = re.compile(r"(?:\b(?:would|could|might)\b|'d\b)")
_WH_CLAUSE = re.compile(r"^[^a-z]*(?:how|what|why|where|who|when)\b")
_NEXT_CLAUSE = re.compile(r"[,;]|\.\s|[!?]\s*\S")


def _hypothetical(text: str, m: re.Match[str]) -> bool:
    """Whether the "if/suppose you <past>" at `m` is a hypothetical offered to the listener,
    not a condition about what they did ("if you danced at the wedding, you must have had
    fun"; "suppose you sat in traffic, how would you feel?"): after a modal ("I'd appreciate
    it if you shook"), before a modal consequence ("if you clapped, that would cheer me up"),
    or as the whole sentence ("suppose you sat down for a bit?", "if only you danced")."""
    lead = m.group("lead")
    if lead.startswith("if ") and lead != "if":  # "if only"
        return True
    before, after = text[: m.start()], text[m.end() :]
    if lead == "if" and re.search(r"\b(?:what|how about|what about|imagine|and)\s+$", before):
        return True  # "what if you stood up?"
    if lead == "if" and before.strip():
        return bool(_MODAL.search(before))  # "I'd be grateful if you", not "I wonder if you"
    rest = _NEXT_CLAUSE.search(after)
    if rest is None:  # "suppose you sat down?"; "if you clapped for me I'd be so happy"
        return lead != "if" or bool(_MODAL.search(after))
    consequence = after[rest.end() :]
    return not _WH_CLAUSE.match(consequence) and bool(_MODAL.search(consequence))


def _subjunctive(text: str) -> str:
    text = _VERB_FINAL_IF.sub(lambda m: f"if you {m.group('m')} {m.group('x')}", text)

    def sub(m: re.Match[str]) -> str:
        v = m.group("v") or m.group("v2")
        base = _base_form(v)
        if base is None or (not m.group("time") and not _hypothetical(text, m)):
            return m.group(0)
        if m.group("time"):
            return f"time you {m.group('adv2') or ''}{base}"
        return f"{m.group('lead')} you would {m.group('adv') or ''}{base}"

    return _SUBJUNCTIVE.sub(sub, text)


def _correction(text: str) -> str:
    m = _CORRECTION.match(text)
    if not m:
        return text
    x = m.group("x").strip()
    if m.group("mark").startswith("make") and re.search(r"\S\s*$", m.group("lead")) and not re.search(
        r"(?:[,.;!?…]|\b(?:no|nah|sorry|oops|actually|wait))\s*$", m.group("lead")
    ):
        return text  # "don't make that sad face", "point and make that face": no correction
    tail = _CORRECTION_TAIL.search(x)
    if m.group("mark").startswith("i ") and not m.group("lead").strip() and not tail:
        return text  # "I said hi to my neighbour": told, not corrected
    if tail:
        x = x[: tail.start()]
    x = x.strip(" ,.!?…")
    if not x:
        return text
    if x in lx.DIRECTIONS:  # "turn right, sorry, I meant left": the same verb, the new way
        verb = _TURN_VERB.search(m.group("lead"))
        x = f"{verb.group(1) if verb else 'turn'} {x}"
    return x


def _noun_frame(text: str) -> str:
    for frame in _FRAMES:
        m = frame.search(text)
        if not m:
            continue
        groups = m.groupdict()
        noun, gerund = groups.get("n"), groups.get("g")
        verb = _NOUNS.get(noun or "") if noun != "look" else "look around"
        verb = verb or _GERUNDS.get(gerund or "")
        if verb is None:
            continue
        start = 0
        for end in _CLAUSE_END.finditer(text, 0, m.start()):
            start = end.end()
        stop = _CLAUSE_END.search(text, m.end())
        rest = text[stop.start() :] if stop else ""
        lead = _ATTENTION.sub("", text[:start])  # "hey, ... feel like dancing?": a call, not a wave
        degree = [w for w in m.group(0).split() if w in lx.HIGH_INTENSITY or w in lx.LOW_INTENSITY]
        if degree:  # "say hello with a big wave": the wave, big ("a little nod" keeps its "little")
            verb = f"{verb} {' '.join(degree)}"
        return (lead + " " + verb + rest).strip()
    return text


#: "when you're done clapping, nod": the gerund's action comes first.
#: "sit down, but wave first": the clause with "first" comes first.
_BUT_FIRST = re.compile(r"^(?P<x>[^,.!?]+?),?\s+but\s+(?P<y>[^,.!?]+?)\s+first\s*(?P<tail>[.!?]*)$")
#: "clap, but only once you've stood up": the perfect comes first.
_ONLY_ONCE = re.compile(
    r"^(?P<x>[^,.!?]+?),?\s+(?:but\s+)?only\s+(?:once|when|after|if)\s+(?:you've|you\s+have|you're|you\s+are|you)\s+"
    r"(?P<y>[^,.!?]+?)\s*(?P<tail>[.!?]*)$"
)
#: Past participles of the core actions' verbs ("once you've stood up" → "stand up").
_PARTICIPLES = {
    "stood": "stand", "sat": "sit", "waved": "wave", "clapped": "clap", "bowed": "bow", "nodded": "nod",
    "danced": "dance", "shrugged": "shrug", "pointed": "point", "walked": "walk", "turned": "turn",
    "looked": "look", "thought": "think", "shaken": "shake", "shook": "shake", "risen": "rise", "got": "get",
    "gotten": "get", "taken": "take", "had": "have", "done": "do", "finished": "finish",
}
_DONE_FIRST = re.compile(
    r"^(?:when|once|after)\s+(?:you're|you\s+are|you've|you\s+have|u\s+r|ur)\s+(?:done|finished|through)\s+"
    r"(?:with\s+)?(?P<g>" + _GERUND_RE + r")\s*,?\s+(?P<rest>.+)$"
)
#: "bow, but only after waving": the gerund's action comes first.
_ONLY_AFTER = re.compile(r"^(?P<x>[^,.!?]+?),?\s+(?:but\s+)?only\s+after\s+(?P<g>" + _GERUND_RE + r")\s*(?P<tail>[.!?]*)$")


#: A leading time clause in any of its words ("once you've nodded, ...", "as soon as you stand up,
#: ...", "the moment you're done with the wave, ...", "only after you've looked around, ...") is
#: said as the one the clause parser orders: "after ...".
_TEMPORAL_LEAD = re.compile(
    r"^(?:(?:ok|okay|so|now|alright|and)[,\s]+)?(?:only\s+)?(?:once|as\s+soon\s+as|soon\s+as|the\s+moment|the\s+minute|"
    r"the\s+second|the\s+instant|right\s+after|just\s+after|straight\s+after|only\s+after|when|whenever)\s+"
    r"(?=(?:you|u|ya)\b|you've\b|you're\b|(?:the|your)\s+\w+(?:'s|\s+is|\s+has)\s+(?:been\s+)?(?:done|over|finished)\b)"
)
#: "after you're done with the wave" → "after the wave"; "after you're finished thinking" → "after thinking".
_AFTER_DONE = re.compile(
    r"\bafter\s+(?:you've|you\s+have|you're|you\s+are|u've|u're|u\s+r)\s+(?:all\s+)?(?:finished|done|through)(?:\s+with)?\s+"
    r"(?=[a-z])"
)
#: "after you're up" → "after you stand up"; "after you're seated" → "after you sit down".
_AFTER_STATE = re.compile(
    r"\bafter\s+(?:you're|you\s+are|u're)\s+(?:(?P<up>up|on\s+your\s+feet|standing|standing\s+up)|(?P<down>seated|sitting|sitting\s+down|down))\b"
)
#: "after the clapping's done" → "after clapping"
_AFTER_OVER = re.compile(r"\bafter\s+(?:the|your)\s+(\w+?)(?:'s|\s+is|\s+has)\s+(?:been\s+)?(?:done|over|finished)\b")
#: "turn left, and right after that, turn right": "right after" is "just after", no direction.
_RIGHT_AFTER = re.compile(r"([,;]\s*|\band\s+)right\s+(after|afterwards|before)\b")
#: "spin right", "glance to the left", "pivot left": a turn with the direction named after its verb.
_TURN_ALIKE = re.compile(
    r"\b(?:spin|rotate|glance|pivot|swivel|twist|swing|whip|peek|peer|veer|swerve|wheel)(?:\s+(?:around|round|over|quickly|slowly))?"
    r"\s+(?:(?:over\s+)?to\s+(?:the|your)\s+|towards?\s+(?:the|your)\s+)?(left|right)\b"
)


def _temporal(text: str) -> str:
    out = _TEMPORAL_LEAD.sub("after ", text, count=1)
    out = _AFTER_DONE.sub("after ", out)
    out = _AFTER_STATE.sub(lambda m: "after you stand up" if m.group("up") else "after you sit down", out)
    out = _AFTER_OVER.sub(r"after \1", out)
    out = _RIGHT_AFTER.sub(r"\1\2", out)
    return _TURN_ALIKE.sub(r"turn \1", out)


def _order(text: str) -> str:
    m = _BUT_FIRST.match(text)
    if m:
        return f"{m.group('y')}, then {m.group('x')}{m.group('tail')}"
    m = _ONLY_ONCE.match(text)
    if m:
        words = m.group("y").split()
        words[0] = _PARTICIPLES.get(words[0], words[0])
        return f"{' '.join(words)}, then {m.group('x')}{m.group('tail')}"
    m = _DONE_FIRST.match(text)
    if m:
        return f"{_GERUNDS[m.group('g')]}, then {m.group('rest')}"
    m = _ONLY_AFTER.match(text)
    if m:
        return f"{_GERUNDS[m.group('g')]}, then {m.group('x')}{m.group('tail')}"
    return text


#: "I waved at you first, your turn": the speaker did an action and hands it over.
_YOUR_TURN = re.compile(
    r"^(?P<lead>(?:i|we)\s+(?:just\s+|already\s+|also\s+)?(?P<v>\w+ed|sat|stood|shook)\b[^.!?]*?)[,.;!…]*\s*"
    r"(?:so\s+|now\s+|ok\s+|okay\s+|and\s+)?(?:it's\s+|its\s+|now\s+it's\s+)?"
    r"(?:your\s+(?:turn|go)|you\s+(?:too|next|try|now)|now\s+you|back\s+at\s+(?:you|ya)|return\s+the\s+favou?r)"
    r"(?:\s+now)?\W*$"
)


def _your_turn(text: str) -> str:
    m = _YOUR_TURN.match(text)
    if not m:
        return text
    past = m.group("v")
    verb = _PARTICIPLES.get(past)
    if verb is None:
        core = past[:-2]
        verb = core[:-1] if len(core) > 3 and core[-1] == core[-2] else core if core.endswith(("w", "k", "t", "p")) else past[:-1]
    return f"{m.group('lead')}. {verb}"


#: Indirect phrasings spread over a whole utterance, rewritten to the request they make
#: (the clause parser reads one clause at a time): "tell me no without words, use your
#: head" → shake the head; "greet them the Japanese way" → bow; "check if anyone is
#: watching" → look around; "the people on your right are calling, face them" → turn right.
_UTTERANCE_CUES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"^(?:please\s+)?(?:tell|say|answer|show)\s+(?:me\s+|us\s+)?(?:no|nope)\b[^?]*?\b(?:use|with|just|using)\s+"
         r"(?:your|ur)\s+head\b", "shake your head"),
        (r"^(?:please\s+)?(?:tell|say|answer|show)\s+(?:me\s+|us\s+)?(?:yes|yeah)\b[^?]*?\b(?:use|with|just|using)\s+"
         r"(?:your|ur)\s+head\b", "nod"),
        (r"^(?:please\s+)?(?:signal|gesture|indicate|sign|mime|motion)\s+(?:a\s+)?(?:yes|yeah|agreement)\b", "nod"),
        (r"^(?:please\s+)?(?:signal|gesture|indicate|sign|mime|motion)\s+(?:a\s+)?(?:no|nope|disagreement)\b",
         "shake your head"),
        (r"^(?:show|tell)\s+(?:me|us)\s+(?:that\s+)?you\s+(?:don't|dont|do\s+not)\s+know\b(?!\s+(?:how|what|why|where|who))",
         "shrug"),
        (r"^(?:please\s+)?(?:greet|salute|welcome|thank)\s+(?:\w+\s+){0,3}?(?:the\s+|in\s+the\s+)?(?:japanese|traditional\s+japanese)"
         r"\s+(?:way|style|fashion|manner)\b", "bow"),
        (r"^curtain\s+call\b(?![^.!?]*\b(?:was|were|is\s+over|ended)\b)", "take a bow ."),
        (r"^(?:(?:please|could\s+you|can\s+you|would\s+you|will\s+you|go|just|quickly|quick)\s+)*(?:check|see|find\s+out|make\s+sure|look\s+to\s+see|figure\s+out)\s+(?:if|whether|to\s+see\s+if)\s+"
         r"(?:(?:any|some|no)(?:one|body)(?:\s+else)?\s+(?:is|'s|has|was)\s+(?:\w+\s+)?(?:watching|looking|around|about|"
         r"listening|there|here|coming|following|followed|nearby|near)|we(?:'re|\s+are)\s+(?:alone|being\s+(?:watched|followed))|"
         r"(?:any|some)(?:one|body)(?:\s+else)?\s+(?:followed|saw|heard|spotted)\s+us)\b", "look around"),
        (r"^(?:please\s+)?(?:make\s+sure|check|see\s+if|find\s+out\s+if)\s+the\s+coast\s+is\s+clear\b", "look around"),
        # Wishes put as a thing the speaker would love: "seeing you dance would make my week",
        # "nothing would cheer me up more than watching you clap", "a friendly wave would make my day",
        # "a silent yes is all I need", "a bow would be the perfect ending": what is wished for is asked.
        (r"(?:^|(?<=[.;!?]\s))(?:honestly\s+|really\s+|just\s+)?(?:seeing|watching)\s+(?:you|u|ya)\s+(?P<x>[^,.!?]+?)\s+(?:would|will|'d|could)\s+"
         r"(?:totally\s+|really\s+|honestly\s+|just\s+|so\s+)?(?:make\s+my|cheer\s+me|be|mean|brighten|light\s+up)\b[^.!?]*", r"\g<x>"),
        (r"(?:^|(?<=[.;!?]\s))nothing\s+(?:would|could|will)\s+(?:\w+\s+){1,4}?(?:more|better)\s+than\s+(?:seeing|watching)\s+(?:you|u|ya)\s+"
         r"(?P<x>[^,.!?]+)", r"\g<x>"),
        (r"(?:^|(?<=[.;!?]\s))(?:a|an|one|some|just\s+a|a\s+nice|a\s+little)\s+(?P<x>[^,.!?]{2,40}?)(?:\s+from\s+(?:you|u|ya))?\s+(?:would|will|'d|could)\s+"
         r"(?:totally\s+|really\s+|honestly\s+|just\s+|so\s+)?(?:make\s+my\s+(?:day|week|night|morning|evening|year|month)|"
         r"cheer\s+me\s+up|mean\s+a\s+lot|be\s+(?:so\s+|really\s+|just\s+)?(?:the\s+)?(?:perfect|sweet|nice|lovely|great|"
         r"ideal|fitting|cute|welcome|appreciated|amazing)|(?:really\s+)?suit\s+(?:this|the)|do(?:\s+nicely)?|suffice)\b[^.!?]*",
         r"\g<x>"),
        (r"(?:^|(?<=[.;!?,]\s))(?:a|an|one|just\s+a)\s+(?P<x>[^,.!?]{2,30}?)\s+(?:is|'s|would\s+be|will\s+be)\s+(?:all|enough|fine|plenty)\b"
         r"[^.!?]*", r"\g<x>"),
        (r"(?:^|(?<=[.;!?]\s))(?:a|an|one)\s+(?P<x>(?:silent|quiet|wordless|little|small|simple)\s+(?:yes|no))\s+(?:will|would|'ll)\s+do\b", r"\g<x>"),
    )
)
#: Someone in the scene doing an action at or for the listener: the listener answers in kind
#: ("the guests are all waving at you", "the kids are saying goodbye to you"); an audience
#: cheering for the listener is answered with a bow ("the crowd is giving you a standing ovation").
_ANSWER_IN_KIND = {"waving": "wave", "bowing": "bow", "nodding": "nod", "clapping": "clap", "dancing": "dance",
                   "waved": "wave", "bowed": "bow", "nodded": "nod", "clapped": "clap", "danced": "dance",
                   "applauding": "clap", "shrugging": "shrug", "shrugged": "shrug"}
_SCENE_CUES: tuple[tuple[re.Pattern[str], str | None], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"(?:'s|'re|\s+is|\s+are)\s+(?:all\s+|just\s+|now\s+)?(?:cheering|applauding|clapping)\s+(?:for\s+)?(?:you|ya|u)\b", "bow"),
        (r"\b(?:giving|gave|given)\s+(?:you|ya|u)\s+(?:a\s+|an\s+)?(?:standing\s+ovation|ovation|round\s+of\s+applause|big\s+hand|"
         r"huge\s+round\s+of\s+applause)\b", "bow"),
        (r"(?:'s|'re|\s+is|\s+are)\s+(?:all\s+|just\s+|now\s+)?(?P<g>waving|bowing|nodding)\s+(?:at|to)\s+(?:you|ya|u)\b", None),
        (r"(?:'s|'re|\s+is|\s+are)\s+(?:all\s+|just\s+|now\s+)?(?:saying|waving)\s+(?:goodbye|bye|hello|hi|farewell)\b", "wave"),
        (r"(?:'s|'re|\s+is|\s+are)\s+(?:all\s+|just\s+|now\s+)?(?P<g>dancing|clapping)\s+(?:but|except|apart\s+from)\s+(?:you|ya|u)\b",
         None),
        (r"(?:'s|'re|\s+is|\s+are|\s+)(?:all\s+)?(?P<g>waving|bowing|nodding|clapping|applauding|dancing|waved|bowed|nodded|clapped|"
         r"danced|shrugging|shrugged)\b(?:\s+(?:at|to)\s+(?:you|ya|u))?[^.!?]*?[,;.!]\s*(?:so\s+|now\s+|go\s+on\s+|come\s+on\s+)?"
         r"(?:join\s+(?:in|them|the\s+\w+)|do\s+(?:the\s+same|likewise)|follow\s+suit|return\s+the\s+(?:gesture|favou?r)|copy\s+them|"
         r"you\s+too|your\s+turn)\b", None),
    )
)


def _scene_cues(out: str) -> str:
    """The clause that sets the scene, replaced by the answer it calls for (see `_SCENE_CUES`);
    a clause told in the past ("the guests were all waving when we left") is news and is left."""
    for pattern, action in _SCENE_CUES:
        m = pattern.search(out)
        if not m:
            continue
        verb = action or _ANSWER_IN_KIND[m.group("g")]
        start = max(out.rfind(c, 0, m.start()) for c in ",;.!?") + 1
        return out[:start] + f" {verb.replace('_', ' ')} ." + out[m.end():]
    return out

_FACE_SIDE = re.compile(
    r"\b(?:on|to|at)\s+(?:your|ur|the)\s+(?P<side>left|right)\b(?P<mid>[^.!]*?[,;:?]\s*(?:(?:wanna|want\s+to|can\s+you|"
    r"could\s+you|will\s+you|go|now|just|so|why\s+not|maybe)\s+)*)(?:turn\s+and\s+)?(?:face|look\s+at|see|check\s+out)\s+"
    r"(?:them|him|her|it|us|that\s+way|that)\b"
)
#: A thing placed to the listener's side with a look asked for: "I bet there's something cool off to
#: your right, have a peek", "check out the view on your right", "the painting's on your left, wanna
#: see it?" (then `_FACE_SIDE`); or a scene cue from one side ("someone just called your name from
#: the right", "there's a puppy on your right!"). Not a route ("on your right when you leave").
_SIDE_LOOK = re.compile(
    r"\b(?:off\s+|over\s+|just\s+|right\s+)?(?:on|to|at|from)\s+(?:your|ur|the)\s+(?P<side>left|right)\b(?:\s+side)?"
    r"(?P<mid>[^.!]*?[,;:?]\s*(?:(?:go|just|so|quick|now|and|wanna|want\s+to|come\s+on)\s+)*)(?:(?:have|take|get|grab|sneak)\s+a\s+"
    r"(?:quick\s+|little\s+|good\s+|closer\s+)?(?:peek|look|gander|glance|peep|squiz|look-see)\b(?!\s+around)|look\s+around\s*[.!?]*$)"
)
_SIDE_SCENE = re.compile(
    r"^(?:(?:look|hey|oh|psst|wow|ooh|quick|check\s+(?:it\s+)?out)[,!]?\s+)?(?:i\s+bet\s+)?"
    r"(?:there's|there\s+is|theres|the\s+[\w']+(?:'s|\s+is|\s+are)|(?:some|any)(?:one|body|thing)\s+(?:just\s+)?\w+|"
    r"who's\s+that|what's\s+that|check\s+out\s+the|look\s+at\s+the)\b[^.!?,;]*?"
    r"\b(?:off\s+|over\s+|just\s+|right\s+)?(?:on|to|at|from|over\s+on)\s+(?P<whose>your|ur|the)\s+(?P<side>left|right)\b"
    r"(?!\s+(?:when|after|as|once|if|before|of\s+the\s+road)\b)(?!\s+side\s+of\b)"
)



def _utterance_cues(out: str) -> str:
    for pattern, replacement in _UTTERANCE_CUES:
        m = pattern.search(out)
        if m:
            return out[: m.start()] + m.expand(replacement) + out[m.end() :]
    m = _FACE_SIDE.search(out)
    if m:  # the side named earlier is the way to turn ("the people on your right ..., face them")
        return out[: m.end("mid")] + f"turn {m.group('side')}" + out[m.end() :]
    m = _SIDE_LOOK.search(out)
    if m:
        return out[: m.end("mid")] + f"turn {m.group('side')}" + out[m.end() :]
    m = _SIDE_SCENE.search(out)
    if m and (m.group("whose") != "the" or " from " in m.group(0)):
        end = min([i for i in (out.find(c, m.end()) for c in ",;.!?") if i >= 0] or [len(out)])
        return f"turn {m.group('side')}" + out[end:]
    return _scene_cues(out)


#: Verbs of the core actions and the verbs that ask for them ("take a bow", "give them a hand"),
#: in the forms an evaluation or a third party's wish puts them in ("if you waved", "everybody sitting").
_ASK_VERBS = (
    "wave bow nod clap dance sit stand turn point shrug think look walk take give shake get rise greet applaud "
    "ponder bend salute curtsy stroll have show join do put mull chew hop boogie spin say bid"
).split()
_VERB_FORMS: dict[str, str] = {
    **{v: v for v in _ASK_VERBS},
    **{v + "s": v for v in _ASK_VERBS},
    **_PARTICIPLES,
    "took": "take", "taken": "take", "gave": "give", "given": "give", "showed": "show", "shown": "show",
    "did": "do", "had": "have", "put": "put", "joined": "join", "greeted": "greet", "applauded": "applaud",
    "pondered": "ponder", "bent": "bend", "saluted": "salute", "rose": "rise", "said": "say", "bade": "bid",
    "waving": "wave", "bowing": "bow", "nodding": "nod", "clapping": "clap", "dancing": "dance", "sitting": "sit",
    "standing": "stand", "turning": "turn", "pointing": "point", "shrugging": "shrug", "thinking": "think",
    "looking": "look", "walking": "walk", "taking": "take", "giving": "give", "shaking": "shake", "getting": "get",
    "rising": "rise", "greeting": "greet", "applauding": "applaud", "pondering": "ponder", "bending": "bend",
    "showing": "show", "joining": "join", "doing": "do", "having": "have", "putting": "put", "saying": "say",
}
_VERB_ALT = "|".join(sorted(map(re.escape, _VERB_FORMS), key=len, reverse=True))
#: How an act is judged ("it would be polite to bow", "it'd mean a lot if you waved", "wouldn't it
#: be fun if you danced", "it would be rude not to bow"): what is judged is asked, when the
#: listener is the one to do it ("if you ...", or "to" + one of the verbs above).
_JUDGED = (
    r"(?:polite|nice|lovely|sweet|kind|fun|great|cool|good|wonderful|fitting|proper|respectful|courteous|classy|"
    r"gracious|thoughtful|awesome|amazing|brilliant|cute|fantastic|perfect|fab|grand|neat|charming|gentlemanly|"
    r"ladylike|appropriate|considerate|decent|the\s+(?:polite|right|decent|kind|nice)\s+thing(?:\s+to\s+do)?|"
    r"(?:rude|impolite|a\s+shame|a\s+pity|weird|strange|odd)\s+not|a\s+(?:nice|lovely|sweet|kind|classy|great)\s+(?:touch|gesture|idea)|"
    r"mean\s+(?:a\s+lot|so\s+much|the\s+world|everything|a\s+great\s+deal)(?:\s+to\s+(?:me|us|him|her|them|the\s+\w+|my\s+\w+|our\s+\w+))?|"
    r"make\s+(?:my|our|his|her|their)\s+(?:day|week|night|evening|morning)|help(?:\s+(?:a\s+lot|loads))?)"
)
#: Judgements that are about manners: said with a bare "to" ("it would be polite to bow to them")
#: they ask the listener; "it would be fun to go to the beach" is the speaker's own wish.
_MANNERS = (
    r"(?:polite|respectful|courteous|proper|classy|gracious|kind|sweet|thoughtful|fitting|considerate|decent|"
    r"appropriate|gentlemanly|ladylike|good\s+manners|the\s+(?:polite|right|decent|kind|proper)\s+thing(?:\s+to\s+do)?|"
    r"(?:rude|impolite|a\s+shame|a\s+pity|weird|strange|odd)\s+not|a\s+(?:nice|lovely|sweet|kind|classy)\s+(?:touch|gesture))"
)
_DEGREE = r"(?:so\s+|really\s+|very\s+|just\s+|only\s+|quite\s+|super\s+|such\s+|rather\s+|pretty\s+|extra\s+)*"
_LEAD = r"(?:^|(?<=[.;!?,]\s))(?:(?:but|so|and|honestly|really|hey|oh|well|i\s+think|i\s+reckon|you\s+know)\s+)*"
_IF_YOU = (
    r"if\s+(?:you|u|ya)(?:'d|\s+would|\s+could)?\s+(?:(?:just|maybe|also|all|could|would)\s+)?(?P<w>" + _VERB_ALT + r")\b"
)
_EVALUATION = re.compile(
    _LEAD + r"(?:(?P<ask>wouldn't\s+it|would\s+it\s+not|won't\s+it)|it\s+would|it'd|it\s+will|it'll|it\s+might|it\s+could)\s+"
    r"(?:be\s+)?" + _DEGREE + r"(?:(?P<manners>" + _MANNERS + r")|" + _JUDGED + r")\s+"
    r"(?:(?P<of>of\s+you\s+|for\s+you\s+)?to\s+(?P<v>" + _VERB_ALT + r")\b|" + _IF_YOU + r")"
)
#: A third party who wants the listener (or everyone) to do something: "the photographer wants
#: everybody up on their feet", "the teacher wants everyone sitting down", "the host would like
#: everyone to take their seats", "the photographer needs you sitting for this one".
_THEIR_WISH = re.compile(
    r"(?:^|(?<=[.;!?,]\s))(?:(?:so|and|but|now|ok|okay)\s+)?(?:the|your|my|our)\s+(?:\w+\s+)?\w+\s+"
    r"(?:wants|needs|would\s+like|'d\s+like|would\s+love|'d\s+love|is\s+asking|asks|is\s+asking\s+for|is\s+telling|says)\s+"
    r"(?:everyone|everybody|you|u|all\s+of\s+us|all\s+of\s+you|you\s+all|y'all|us\s+all|us|the\s+whole\s+(?:room|group|class|crowd)|people)\s+"
    r"(?:(?:to\s+)?(?P<v>" + _VERB_ALT + r")\b|(?P<up>(?:up\s+)?on\s+(?:their|your|our)\s+feet|up\b|standing\b)|(?P<down>seated|down\b|in\s+(?:their|your|our)\s+seats))"
)
#: Someone's delight at the act: "the kids would love it if you danced", "grandpa would be thrilled
#: if you bowed to him", "the least you can do is wave".
_DELIGHT = re.compile(
    r"(?:^|(?<=[.;!?,]\s))(?:[\w']+\s+){0,3}?(?:would|will|\w*'d|\w*'ll)\s+(?:really\s+|so\s+|just\s+|totally\s+)?"
    r"(?:love\s+it|like\s+it|adore\s+it|enjoy\s+it|appreciate\s+it|be\s+(?:so\s+|really\s+|very\s+|over\s+the\s+moon\s+|"
    r"absolutely\s+)?(?:thrilled|delighted|happy|glad|pleased|chuffed|honou?red|touched|stoked|ecstatic|over\s+the\s+moon|"
    r"grateful|tickled\s+pink))\s+" + _IF_YOU
    + r"|(?:^|(?<=[.;!?,]\s))the\s+least\s+(?:you|u)\s+(?:can|could)\s+do\s+is\s+(?:to\s+)?(?P<v>" + _VERB_ALT + r")\b"
)
_HOW_ABOUT = re.compile(
    r"(?:^|(?<=[.;!?,]\s))(?:(?:so|well|and|now|hey)\s+)?(?:what|how)\s+about\s+(?:you\s+|we\s+|u\s+)?(?P<v>" + _VERB_ALT + r")\b"
    r"(?!\s+(?:lessons?|class(?:es)?|shoes|music|partners?|schools?|competitions?|shows?|floors?|moves|clubs?|videos?|"
    r"games?|songs?|skills?|practice|tips|contests?|styles?|dogs?|sticks?|tours?|trips?)\b)"
    r"(?:\s+(?:you|yourself|u)\b)?"
)
#: "take a moment to ponder it", "take a second and look around": the act after the pause is asked.
_TAKE_A_MOMENT = re.compile(
    r"\btake\s+(?:a|one|some|a\s+little|a\s+quick|a\s+short|a\s+brief)\s+(?:moment|second|sec|minute|min|beat|breath|bit|while)\s+"
    r"(?:to|and)\s+(?P<v>" + _VERB_ALT + r")\b"
)


def _judged(out: str) -> str:
    """Evaluations, a third party's wish, "how about ...ing", "take a moment to ..." as the act asked."""
    m = _EVALUATION.search(out)
    if m and m.group("v") and not (m.group("manners") or m.group("of") or m.group("ask")):
        m = None  # "it would be fun to go to the beach": the speaker's wish
    if m and not re.search(r"\b(?:i|we|he|she|they)\s+(?:would|'d|could)\b", out[: m.start()]):
        verb = _VERB_FORMS[m.group("v") or m.group("w")]
        return out[: m.start()] + verb + _unasked(out[m.end() :])
    m = _DELIGHT.search(out)
    if m:
        return out[: m.start()] + _VERB_FORMS[m.group("v") or m.group("w")] + _unasked(out[m.end() :])
    m = _THEIR_WISH.search(out)
    if m:
        said = "get up" if m.group("up") else "sit down" if m.group("down") else _VERB_FORMS[m.group("v")]
        return out[: m.start()] + said + re.sub(r"\b(?:their|our)\b", "your", out[m.end() :])
    m = _HOW_ABOUT.search(out)
    if m:
        rest = re.sub(r"^\s+(?:you|u)\s+(?=up\b|down\b)", " ", out[m.end() :])
        return out[: m.start()] + _VERB_FORMS[m.group("v")] + _unasked(rest)
    m = _TAKE_A_MOMENT.search(out)
    if m:
        return out[: m.start()] + _VERB_FORMS[m.group("v")] + _unasked(out[m.end() :])
    return out


def _unasked(rest: str) -> str:
    """The rest of a suggestion put as a question ("how about a dance?"), its question mark a full stop."""
    return re.sub(r"\?", ".", rest, count=1)


#: A hyphen inside a word ("half-hearted"): the tokenizer would end the clause there.
_HYPHEN = re.compile(r"(?<=[a-z])-(?=[a-z])")
#: A degree said as advice after the request ("dance, but take it easy", "nod, nice and easy").
_EASY = re.compile(
    r"([,;]\s*(?:but\s+|and\s+|just\s+)*)(?:take\s+it\s+easy|go\s+easy(?:\s+on\s+it)?|nice\s+and\s+easy|easy\s+does\s+it|"
    r"gently\s+does\s+it|(?:don't|do\s+not|no\s+need\s+to)\s+overdo\s+it|not\s+too\s+much|keep\s+it\s+(?:low[\s-]?key|small|subtle|chill))\b"
)
#: "go all out with the dancing", "go wild on the clapping": that action, at full strength.
_GO_ALL_OUT = re.compile(
    r"\bgo\s+(?:all\s+out|wild|crazy|nuts|big|hard|full\s+out|all\s+in)\s+(?:with|on)\s+(?:the|your|that|those|some)\s+(\w+)\b"
)


def rewrite(text: str) -> str:
    """`text` with the frames above resolved into words the clause parser reads."""
    lowered = text.lower()
    out = lowered
    if _FIRST_PERSON.match(out) and _ACTION_EMOJI_RE is not None:
        out = _ACTION_EMOJI_RE.sub(" ", out)  # "I walked 10k steps today 🚶": decoration
    out = _REPEATED_VERY.sub("", out)  # "really, really excited": one clause
    out = _FACE_IDIOM_RE.sub(lambda m: _FACE_IDIOMS[m.group(0)], out)
    out = _OF_YOURS.sub(r"your \1", out)
    out = _correction(out)
    out = _subjunctive(out)
    out = _order(_temporal(out))
    out = _your_turn(out)
    for pattern in _NOT_ACTION_RES:
        out = pattern.sub(" ", out)
    out = _MOVE_ON.sub("talk", out)
    out = _BEAR.sub(r"\1 \2\3bear", out)
    out = _TOPIC.sub("that ", out)
    out = _noun_frame(out)
    out = _utterance_cues(_judged(out))
    out = _FREE_OF.sub(lambda m: f"{m.group(2)} without {m.group(1)}" if m.group(2) else f"without {m.group(1)}", out)
    out = _HYPHEN.sub(" ", out)  # "half-hearted", "thank-you bow": one clause, not two
    out = _EASY.sub(r"\1 gently", out)
    out = _GO_ALL_OUT.sub(lambda m: f"{_VERB_FORMS.get(m.group(1), m.group(1))} all out", out)
    out = re.sub(r"\s{2,}", " ", out).strip()
    return text if out == lowered.strip() else out


def suggestion_prefix(words: Sequence[str]) -> int:
    """How many leading words form a modal suggestion around an imperative ("maybe you
    ought to", "don't you want to", "I wonder if you could"), or 0."""
    joined = " ".join(map(str, words)) + " "
    m = _SUGGESTION.match(joined)
    if not m:
        return 0
    n = len(m.group(0).split())
    if n >= len(words) or str(words[n]) in _STATE:
        return 0  # "you should be proud" describes; "you should sit" asks
    return n
