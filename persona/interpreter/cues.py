"""Cue patterns for what the vocabulary cannot name: indirect requests, stop phrasing,
questions and statements whose subject is an activity.

Why patterns and not more table rows: an indirect request is built from a few kinds of
parts ("grab / take / have" + any seat word, "you look" + any tiredness word, "everybody" +
any up-word, "a hand / some noise / applause" + "for"), and a phrase table lists only the
combinations someone thought of ("grab a chair" but not "take the couch"). Each pattern here
is one such combination of small word classes, anchored where the grammar puts it: an
imperative at the start of the clause (after politeness was stripped), an offer anywhere
("the bench is all yours"), a remark about the listener only when it starts with "you"
("you look worn out"; "my legs are tired" is the speaker's news and asks for nothing).
A question ("are you tired of standing?") never asks for an indirect action.

Why hand-written: the embedding fallback over prototype phrasings was measured against a
held-out split and acted on statements as often as it found requests
(docs/interpreter.md); these patterns keep the decision explainable and under a
millisecond. Everything is plain regular expressions over the clause's lower-case words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = [
    "DEGREE_BASES", "activity_adjuncts", "best_effort", "gerund_subject", "go_ahead", "indirect_action", "intensity_word",
    "is_narrated", "is_question", "music_context", "past_tense", "request_frame", "seat_context", "stop_phrasing",
]


def _alt(words: str) -> str:
    """A regex alternation of space-separated words (underscores stand for spaces)."""
    items = sorted((w.replace("_", " ") for w in words.split()), key=len, reverse=True)
    return "(?:" + "|".join(re.escape(w).replace(r"\ ", " ") for w in items) + ")"


SEAT = _alt(
    "chair chairs seat seats sofa sofas couch couches bench benches stool stools armchair armchairs "
    "recliner settee cushion cushions beanbag bean_bag throne pew loveseat futon ottoman deckchair "
    "deck_chair rocking_chair swivel_chair spot_on_the_couch hammock"
)
TIRED = _alt(
    "tired exhausted worn_out worn_down beat knackered wiped wiped_out shattered pooped drained sleepy "
    "weary spent done_in run_down fatigued wrecked dog_tired bushed zonked whacked dead_on_your_feet fried "
    "running_on_empty out_of_steam ready_to_collapse asleep_on_your_feet all_in frazzled "
    "dead_tired beat_up burnt_out burned_out ready_to_drop about_to_drop flagging fading wilting"
)
#: Words between "you" and the tiredness ("you must be so tired", "you've been looking beat").
_YOU_MID = _alt(
    "must be been look looks looking seem seems sound sounds are have got to gotta so really very "
    "pretty totally super completely absolutely a bit kinda kind of quite all must've probably "
    "definitely getting feel feeling appear rather utterly"
)
BODY = _alt("feet legs knees back bones dogs ankles calves")
YOUR = _alt("your those ur yer these them the ya")
_SORE = _alt("weary tired aching poor sore achy hardworking hard_working")
PAIN = _alt(
    "hurt hurting ache aching sore tired killing_you be_killing_you be_sore be_tired be_aching "
    "need_a_rest need_a_break be_exhausted throbbing be_throbbing must_hurt"
)
EVERYBODY = _alt(
    "everybody everyone all_of_you all y'all you_all you_guys guys folks people class team kids gang "
    "crew troops friends"
)
UP_WORD = _alt(
    "up rise stand stand_up get_up on_your_feet to_your_feet upright arise on_ya_feet on_their_feet to_their_feet "
    "on_our_feet to_our_feet"
)
MUSIC = _alt(
    "music beat beats song songs tune tunes track rhythm dj playlist jam banger bop melody band orchestra"
)
#: Dances by name: a style or a party dance is a dance. A signature move (the moonwalk, the
#: robot, the floss, a backflip) is a move of its own, and stays unsupported.
DANCE_NAMES = _alt(
    "waltz tango salsa twist macarena cha_cha conga jig samba polka disco tap_dance ballet hula foxtrot rumba "
    "mambo charleston cancan can_can limbo hustle electric_slide chicken_dance cha-cha lambada flamenco bachata "
    "merengue jive swing two-step two_step line_dance square_dance ballroom hokey_cokey hokey_pokey "
    "cupid_shuffle gangnam_style"
)
DANCE_VERBS = _alt("waltz tango salsa jive boogie foxtrot rumba samba polka shimmy")
SCENE_THING = _alt(
    "exit exits door doors way_out bathroom toilet toilets restroom loo kitchen stairs staircase lift elevator "
    "entrance window windows station shop car bus_stop bar stage garden office bedroom hall lobby exit_sign"
)
PLACE = _alt(
    "place room area surroundings scene space spot venue joint premises landscape neighbourhood "
    "neighborhood view views scenery sights vista garden hall world crowd audience horizon room_for_me faces"
)
#: Lead-ins an imperative may carry before its verb ("time to get off the couch").
_LEAD = r"(?:(?:" + _alt(
    "time_to it's_time_to its_time_to go come come_on c'mon now ok okay quick quickly hey "
    "everyone everybody y'all guys folks maybe you_should you_might_want_to"
) + r") )*"

#: (pattern, action); the first that matches a clause wins, in this order. A pattern that
#: starts with "~" is an offer ("my chair is free") and may follow any subject; the others do
#: not fire in a clause that opens with a first- or third-person subject ("I feel the beat").
_PATTERNS: tuple[tuple[re.Pattern[str], str, bool], ...] = tuple(
    (re.compile(p.removeprefix("~")), a, p.startswith("~"))
    for p, a in (
        # -- sit --------------------------------------------------------------------------
        # The listener's body or tiredness, said to them: "you look worn out", "your feet must hurt".
        (rf"^(?:you|you've|you're|u|ya|you'd)(?: {_YOU_MID})* {TIRED}\b", "sit"),
        (rf"^(?:you|you've|u)(?: {_YOU_MID})* (?:standing|on your feet|on ya feet|up and about|on the go|"
         rf"on the move|running around|rushing around|run off your feet|rushed off your feet|"
         rf"walking all day|working all day|at it all day|busy all day)\b", "sit"),
        (rf"^(?:you've|you have|u've)(?: {_YOU_MID})* (?:walking|running|dancing|pacing|working|rushing|going|"
         rf"moving|running around|dashing about|on the run)"
         rf" (?:for hours|all day|all morning|all night|all afternoon|for ages|forever|since|non stop|nonstop|"
         rf"the whole)\b", "sit"),
        (rf"^{_LEAD}get (?:comfy|comfortable|cosy|cozy)\b", "sit"),
        # About to give way, said to the listener: "you look like you're about to fall over".
        (rf"^(?:you|you're|u|ya)(?: {_YOU_MID})*(?: like)?(?: you're| you are| ur)? (?:about|going|gonna|ready|set) to "
         rf"(?:fall over|fall down|keel over|collapse|drop|pass out|faint|fall asleep|nod off|topple over)\b", "sit"),
        (r"^(?:you|u|you'd|you'll)\b.*\b(?:could|can|might|must|would|will|need|needs) (?:use|do with|need|want|like)"
         r" (?:a|some|to) (?:seat|sit|sit down|sit-down|chair|rest|break|breather|breather on \S+)\b", "sit"),
        (rf"\bjoin me (?:on|at|in) (?:the|this|my|our) {SEAT}\b", "sit"),
        (rf"^{_LEAD}(?:take|have|grab) (?:a breather|a break|a rest|five|ten|a load off|a pew) (?:on|in) (?:\S+ )?{SEAT}\b", "sit"),
        (rf"^(?:your|ur)(?: {_SORE})? {BODY} (?:\S+ )?{PAIN}\b", "sit"),
        # Rest the body: "give your legs a break", "rest those weary feet", "get off your feet".
        (rf"^{_LEAD}(?:rest|relax|ease|spare|save) {YOUR}(?: {_SORE})? {BODY}\b", "sit"),
        (rf"^{_LEAD}give {YOUR}(?: {_SORE})? {BODY} a (?:break|rest|breather)\b", "sit"),
        (rf"\b(?:get|stay) off {YOUR} (?:feet|legs)\b", "sit"),
        (rf"\b(?:weight|load|pressure) off {YOUR}(?: {_SORE})? {BODY}\b", "sit"),
        (rf"^{_LEAD}put {YOUR} feet up\b", "sit"),
        # Take a seat by name: "take the couch", "grab the stool", "settle into the armchair".
        (
            rf"^{_LEAD}(?:take|grab|have|use|try|pull up|claim|nab|snag|steal|sink into|sink in|settle into|"
            rf"settle in|settle on|plop into|plop onto|plop on|hop on|hop onto|jump on|make use of|rest on|relax on|"
            rf"relax in|lounge on|curl up on|curl up in|flop on|flop onto|flop into|collapse on|collapse into|"
            rf"pull over|drag over|bag|park on|get comfy on|get comfortable on|get comfy in|"
            rf"get comfortable in)(?: (?!off\b|out\b|up\b|away\b|down\b)\S+){{0,3}}? {SEAT}\b",
            "sit",
        ),
        # A seat offered: "the bench is all yours", "there's a chair for you", "here's a stool".
        (
            rf"~\b{SEAT}(?:'s| is| are)(?: all| right| just| still| now)* (?:yours|free|empty|open|available|"
            rf"vacant|there|over there|here|waiting|calling|ready|for you|calling your name|behind you|next to you|"
            rf"beside you|behind ya)\b",
            "sit",
        ),
        (
            rf"~^(?:there's|theres|there is|here's|heres|here is|got|i've got|i have|we have|we've got) "
            rf"(?:a|an|one|another|the|my|this|that|a free|an empty|a spare|an open|a comfy|plenty of)"
            rf"(?: \S+)? {SEAT}(?: (?:for you|free|here|right here|right there|over there|with your name|"
            rf"if you|waiting|open|empty|available|spare|going|you can)|$)",
            "sit",
        ),
        (
            rf"^{_LEAD}(?:plonk|plop|park|plant|perch|seat|sit|settle|nestle|rest|lower|drop)"
            rf" (?:yourself|your (?:butt|bum|behind|rear|backside|tush|tushy|rump|booty|bottom|self|carcass|weary bones|"
            rf"bones)|ya)\b",
            "sit",
        ),
        (r"^(?:plonk|plop|park|plant) it\b", "sit"),
        (rf"~\b{SEAT}(?: \S+){{0,3}} (?:has|with|has got|'s got|got) (?:your|ur) name (?:on|written on) it\b", "sit"),
        # A seat placed near the listener, with the offer after it: "there's a free chair right behind
        # you if you want it", "there's a stool over there for you".
        (rf"~^(?:there's|theres|there is|here's|heres|here is) (?:a|an|one|another|the|my|this|that)(?: \S+)? {SEAT}"
         rf"(?: \S+){{0,5}} (?:if you (?:want|need|like|fancy)|for you|you can (?:have|use|take))\b", "sit"),
        (r"^(?:put|plant|park|plonk|plop|rest) (?:your|ur|yer) (?:butt|bum|behind|rear|backside|tush|tushy|rump|bottom|"
         r"self)\b", "sit"),
        (rf"^{_LEAD}(?:kick back|lounge|recline|loll|sprawl|curl up)\b", "sit"),
        (rf"~\b(?:room|space|a spot|a place|a space|plenty of room|a seat) (?:on|in|at|next to me on|beside me on)"
         rf" (?:the|this|that|my|our) {SEAT}\b", "sit"),
        # Sink into a seat without naming it: "plop down", "flop down on the sofa".
        (rf"^{_LEAD}(?:plop|flop|plonk|sink|slump|flump|collapse|crash|hunker) (?:yourself )?down\b", "sit"),
        (rf"^{_LEAD}make yourself (?:comfortable|comfy|cosy|cozy|at home)(?: (?:on|in|at) (?:the|this|that|my|our) {SEAT}|$)",
         "sit"),
        # Aches said to the listener: "you must be sore", "you must be aching from all that standing".
        (rf"^(?:you|you're|u|ya|you've)(?: {_YOU_MID})* (?:sore|aching|achy|stiff|hurting|in pain)\b(?! about| at| with| that| because| over)", "sit"),
        # A seat placed by the listener: "there's a comfy chair just behind you".
        (rf"~^(?:there's|theres|there is|here's|heres|here is) (?:a|an|one|another|the|my|this|that)(?: \S+)? {SEAT}"
         rf"(?: \S+){{0,3}} (?:you|ya|u|yourself|here|there)$", "sit"),
        # -- turn -------------------------------------------------------------------------
        # Facing or swivelling to a side: "face the window on your right", "swivel to your left".
        (r"^(?:face|swivel|pivot|rotate|spin|swing|veer|angle yourself|turn to face|turn and face)"
         r"(?: \S+){0,5}? (?:to|on|towards|toward|at)? ?(?:your|ur|the|my) left\b", "turn_left"),
        (r"^(?:face|swivel|pivot|rotate|spin|swing|veer|angle yourself|turn to face|turn and face)"
         r"(?: \S+){0,5}? (?:to|on|towards|toward|at)? ?(?:your|ur|the|my) right\b", "turn_right"),
        # -- stand ------------------------------------------------------------------------
        (rf"^{EVERYBODY}(?: (?:please|now|get|come|come on|on|quickly|back|let's|lets|together|at once|right|"
         rf"just|go|must|should|needs to|need to|has to|have to|can)){{0,2}} {UP_WORD}\b", "stand"),
        (r"^up(?: (?:you|we|and|on|with|off|out|here|now|please|get|go|from|at|high|quickly|already)\b|$)", "stand"),
        (
            rf"\b(?:get|climb|hop|jump|roll|peel yourself|drag yourself|haul yourself|pull yourself|lift yourself)"
            rf"(?: you| yourself)?(?: up)? (?:off|out of|up from|up off|from)"
            rf" (?:the|that|this|your|my|ur|yer) (?:{SEAT}|floor|ground|bed)\b",
            "stand",
        ),
        (r"\boff (?:your|ya|ur|yer) (?:butt|bum|behind|rear|backside|tush|tushy|rump|seat|couch|chair)\b", "stand"),
        # -- clap -------------------------------------------------------------------------
        (
            rf"^{_LEAD}(?:a |some |a big |a huge |a warm |a nice |a massive |a loud |a little |three |a round of |"
            rf"another )?(?:hand|applause|noise|cheer|cheers|love|ovation|standing ovation|clap|claps|"
            rf"round) for\b",
            "clap",
        ),
        (r"^(?:make|raise|let's make|let's hear) (?:some |a little |a lot of )?(?:noise|applause|cheers)\b", "clap"),
        (r"\bdeserves? (?:a |some |a big |a round of |an |a standing )?(?:applause|hand|clap|round|ovation|cheer)\b",
         "clap"),
        (r"^hear it(?: for\b|$)", "clap"),
        # "can we get some love for the band?", "let's give a warm welcome to our speaker"
        (r"^(?:can|could|may) (?:we|i|everyone|everybody) (?:get|have|hear) (?:some |a little |a big |a huge |a |a round of )?"
         r"(?:love|applause|hand|noise|cheer|cheers|clap|claps) for\b", "clap"),
        (rf"^{_LEAD}(?:let's |lets |let us )?(?:give|show)(?: \S+){{0,2}}? (?:a |an )?(?:warm|big|huge|nice|great|massive|"
         rf"hearty|rousing|proper|enthusiastic) welcome\b", "clap"),
        (r"^put (?:em|'em|them|those|your hands|ur hands|those hands|your palms) together\b", "clap"),
        (r"^cheer(?! up\b)(?: \S+)*$", "clap"),
        (
            r"^(?:give|show)(?! me\b| us\b)(?: \S+){1,3}? (?:some |a little |a bit of |a big |a huge |a warm |a |"
            r"a round of )?(?:love|applause|appreciation|props|kudos|hand|clap|cheer|ovation)\b"
            r"(?! with\b(?! (?:your|ur|those|both|them) hands\b))",
            "clap",
        ),
        # -- dance ------------------------------------------------------------------------
        (r"\bget (?:this|the|our) party (?:started|going|rolling|on)\b", "dance"),
        (r"^(?:let's |lets )?(?:party|rave|disco|jam|groove|boogie)(?: \S+)*$", "dance"),
        (r"\b(?:hit|tear up|burn up|own|rule|take over|light up|work|grace|take to|get on|get out on|"
         r"head to|head for|get onto) the (?:dance )?floor\b", "dance"),
        (r"\b(?:on|onto|to) the dance ?floor\b", "dance"),
        (r"^(?:throw|pull|bust|cut|show me|show us) (?:some|a few|your best|your|a|ur) shapes\b", "dance"),
        (r"\b(?:cut (?:loose|a rug|the rug)|let (?:loose|your hair down)|get (?:your|ur) (?:groove|boogie|dance|"
         r"jig|funk) on|get (?:jiggy|funky|groovy|down and boogie)|(?:fancy |nifty |some |your )footwork)\b",
         "dance"),
        (r"\bshake (?:your|that|those|ur|yer|a) (?:hips|booty|body|tail feathers|thing|groove thing|bum|butt|"
         r"moneymaker|rump|behind|tush)\b", "dance"),
        (r"\bmove (?:your|that|those|ur|yer) (?:body|hips|booty|bum|butt)\b", "dance"),
        (rf"\b(?:move|groove|sway|bop|jam|boogie|rock out|get down|vibe|bounce|sway along|move along)"
         rf" (?:to|with) (?:the|this|that|my|some|our|a|your) (?:\S+ )?{MUSIC}\b", "dance"),
        (rf"\bfeel the {MUSIC}\b", "dance"),
        # Moves as a noun are dance moves: "let's see some moves", "show us your moves", "bust a move".
        (r"\b(?:your|ur|some|those|these|best|fancy|sick|funky|cool|new|dance|killer|smooth|signature) moves\b", "dance"),
        (r"^(?:bust|pull|throw) (?:a|some) moves?\b", "dance"),
        (rf"^(?:do|bust out|break out|show me|show us|let's see|give us|give me|try|perform|dance) (?:the |a |some |"
         rf"your |a little |a bit of |a quick |a slow |your best )?{DANCE_NAMES}\b", "dance"),
        (rf"^(?:(?:how|what) about )?(?:a|some) (?:little |quick |short )?{DANCE_NAMES}(?: now| please| for me| for us)?$",
         "dance"),  # "how about a little jig"
        (rf"^{DANCE_VERBS}\b", "dance"),
        (r"^(?:jam|rock|bop|bounce|vibe|groove) (?:out|along|away)\b", "dance"),
        # -- walk -------------------------------------------------------------------------
        (rf"\b(?:stretch|move|use|work) {YOUR} legs\b", "walk"),
        (r"^(?:take|do|go for|run|make|have) (?:a|one|another|a little|a quick|a short|a slow|a gentle) "
         r"(?:lap|loop|turn|circuit|wander|walkabout|ramble|saunter|mosey|amble|meander|jaunt|promenade|"
         r"constitutional)\b", "walk"),
        (r"\b(?:get|rack up|clock up|clock|log) (?:some|your|a few|more|those) steps\b", "walk"),
        (r"^(?:mosey|saunter|amble|meander|roam|promenade|ramble|trot|march|tiptoe|stride|strut)\b", "walk"),
        # Come or go somewhere: the character walks there ("come over here", "follow me").
        (r"^(?:come|c'mon|get) (?:over )?(?:here|this way|closer|to me|over here|over|nearer|along|with me)\b", "walk"),
        (r"^(?:follow) (?:me|us|along|the \S+|my lead|behind)\b", "walk"),
        (r"^(?:go|head|move|step|wander|walk|make your way|run along) (?:on )?(?:over )?(?:there|over there|to the \S+|"
         r"over to|towards?|across|outside|inside|upstairs|downstairs|along|aside|away|back|forward|that way|"
         r"this way|ahead)\b", "walk"),
        (r"^(?:off you go|on your way|move along|get going|keep moving|keep walking|lead the way)\b", "walk"),
        # -- wave -------------------------------------------------------------------------
        # Seeing people off or greeting them as they come: "see them off", "wish them goodbye".
        (r"^(?:see|send|wave) (?:them|him|her|us|me|everyone|everybody|the \S+|our \S+|your \S+) off\b", "wave"),
        (r"^(?:wish|bid) (?:them|him|her|us|me|everyone|everybody|the \S+|our \S+) (?:goodbye|farewell|good night|"
         r"goodnight|good morning|bye)\b", "wave"),
        (r"^(?:say|wave) (?:hi|hello|hey|bye|goodbye|good night|goodnight|good morning|farewell|cheerio) (?:to|at)\b", "wave"),
        # -- look around ------------------------------------------------------------------
        (r"^(?:have|take|get|grab) (?:a |another )?(?:quick |good |little |proper |long |careful |nosy )?"
         r"(?:peek|peep|look|gander|nose|squiz|butchers|glance|snoop|poke|scan|look-see|look see) "
         r"(?:around|round|about)\b", "look_around"),
        (r"^(?:peek|peep|snoop|poke|nose|scout|case|glance|gaze|peer|scope|have a look) (?:around|about|round)\b",
         "look_around"),
        (rf"^(?:take in|soak in|soak up|drink in|admire|enjoy|check out|scope out|survey|scan|inspect|case|"
         rf"look over|explore|size up|get a feel for|get a load of) (?:the|this|that|your|our|all the|all this|"
         rf"all of the|these|those)(?: \S+)? {PLACE}\b", "look_around"),
        (r"^(?:see|check|find out|tell me|show me|look at|what's|whats|what is) (?:what's |whats |what is |what )?"
         r"(?:around|near|about) (?:you|us|here)\b", "look_around"),
        (r"^(?:keep|have) (?:an eye out|your eyes peeled|a lookout|your eyes open)\b", "look_around"),
        (rf"^(?:have|take|get|grab) (?:a |another )?(?:quick |good |little |proper |long |careful |close )?"
         rf"(?:look|peek|gander|glance) at (?:the|this|that|your|our|all the)(?: \S+)? {PLACE}\b", "look_around"),
        # -- point ------------------------------------------------------------------------
        (r"^(?:direct|guide|steer|send) (?:me|us|them|him|her) (?:to|toward|towards|in the direction of|"
         r"over to|back to)\b", "point"),
        (r"^(?:show|tell) (?:me|us) (?:where|which way|the way|the direction|in which direction)\b", "point"),
        (r"^which (?:way|direction) (?:is|to|do i|do we|should i|should we)\b", "point"),
        # Where a thing in the scene is: the answer is a point ("where's the door?").
        (rf"^(?:where's|wheres|where is|where are) (?:the|your|that|this) {SCENE_THING}\b", "point"),
        # -- think ------------------------------------------------------------------------
        (r"\b(?:chew|sleep|mull|ruminate|reflect|meditate|muse|noodle|ponder|brood|deliberate) "
         r"(?:on|over|about) (?:it|that|this|things)\b", "think"),
        (r"\b(?:put|get|pop) (?:your|ur|on your|on ur) thinking cap\b", "think"),
        (r"^(?:use|engage|rack) (?:your|ur) (?:head|brain|brains|noggin|noodle|grey cells|gray cells)\b", "think"),
        (r"^(?:figure|work|puzzle|think|sort) (?:it|this|that|things) (?:out|through|over)\b", "think"),
        (r"^(?:puzzle|brood) over\b", "think"),
        # Verb, object, particle: "mull that over", "chew it over", "ponder that".
        (r"^(?:mull|chew|turn|think|talk yourself) (?:it|that|this|things|them) (?:over|through)\b", "think"),
        (r"^(?:ponder|contemplate|mull over|chew over|muse on|muse over|reflect on) (?:it|that|this|things|"
         r"the question|my question|the idea)\b", "think"),
        (r"^(?:give|put) (?:it|this|that)(?: some| a little| a bit of| some serious| a moment's| a second's)? "
         r"(?:thought|think|consideration)\b", "think"),
        # -- bow, nod, shake head -------------------------------------------------------
        (r"^(?:take|have) (?:a|your|another|one more|a deep|a little) (?:bows?|curtain call)\b", "bow"),
        (r"^(?:pay|show) (?:your|some|due|my|our|the)? ?respects?\b", "bow"),
        (r"^(?:give|show) (?:me |us )?(?:a |two )?thumbs? up\b", "nod"),
        (r"^(?:give|show) (?:me |us )?(?:a )?thumbs? down\b", "shake_head"),
        # The body part that answers: "say so with your shoulders", "shoulders up", "a dip of your head".
        (r"^(?!(?:relax|drop|roll|loosen|lower|rub|massage|straighten|square|pull|put|keep|hold)\b)"
         r"(?:\S+ ){0,8}?(?:with|using|use) (?:your|ur|those|them) shoulders\b", "shrug"),
        (r"^(?:shoulders|shoulder) up\b", "shrug"),
        (r"\b(?:yes|yeah|yep|agree|agreed)\b(?: \S+){0,6} (?:your|ur|a|the) head\b(?! (?:shake|shaking|off))", "nod"),
        (r"\b(?:no|nope|nah|disagree)\b(?: \S+){0,6} (?:your|ur|a|the) head\b", "shake_head"),
        (r"\b(?:dip|bob|tip|incline) of (?:your|ur|the) head\b", "nod"),
        # A performer's thanks to an audience is a bow: "thank the audience properly".
        (r"^thank (?:the|your|our|all the|all your|everyone in the) (?:\S+ )?(?:audience|crowd|fans|viewers|spectators|"
         r"public|house|room)\b", "bow"),
    )
)

#: First words of a yes/no question when a subject follows ("are you tired?", "is that free?").
_QUESTION_AUX = frozenset("are is am was were do does did have has had".split())
_PRONOUNS = frozenset("you u ya we they i he she it anyone anybody someone somebody everyone everybody".split())
_SUBJECTS = _PRONOUNS | frozenset("that this there these those your my his her their our the".split())


#: Clause openers that make it the speaker's (or someone else's) news, not a request.
_NARRATORS = frozenset(
    """i i'm im i've ive i'd i'll we we're we've we'd we'll he he's she she's they they're they've it
    it's my our his her their someone somebody nobody mum mom dad people""".split()
)


def is_narrated(words: Sequence[str]) -> bool:
    """The clause opens with a first- or third-person subject: news, not a request."""
    return bool(words) and words[0] in _NARRATORS


def _joined(words: Sequence[str]) -> str:
    return " ".join(str(w) for w in words if str(w)[:1].isalnum())


def is_question(words: Sequence[str]) -> bool:
    """A yes/no question: an auxiliary then a subject ("do you ever get tired of standing",
    "is that chair free"). "have a seat" and "do a lap" are imperatives, not questions."""
    if len(words) < 2 or words[0] not in _QUESTION_AUX:
        return False
    # "have a seat", "do the twist": after have/do only a pronoun makes a question.
    return words[1] in (_PRONOUNS if words[0] in ("have", "has", "had", "do", "does", "did") else _SUBJECTS)


_DETERMINERS = frozenset("a an the my your his her their our this that these those every".split())
#: Nouns after a determiner that are still the listener ("can your hands clap?", "could you").
_BODY_AND_SELF = frozenset("hand hands head arm arms legs feet body face eyes shoulders self".split())
_MODALS = frozenset("can could will would do does did should may might must".split())
_NOT_OTHERS = _PRONOUNS | frozenset("the a an this that one some yous y'all guys folks all people please".split())


def asks_about_others(words: Sequence[str]) -> bool:
    """A question whose subject is someone or something else ("can cats be trained to sit?",
    "do penguins wave their flippers?"): about the world, not a request. Only a bare
    plural noun counts as the subject ("do the twist" is an imperative)."""
    if len(words) < 3 or words[0] not in _MODALS:
        return False
    subject = str(words[1])
    if (
        len(words) >= 4 and words[0] not in ("do", "did") and subject in _DETERMINERS
        and str(words[2]).isalpha() and str(words[2]) not in _BODY_AND_SELF
    ):
        return True  # "can a horse bow?", "does your dog sit on command?" ("do the robot dance" asks)
    return (
        subject not in _NOT_OTHERS and subject.isalpha() and len(subject) > 3 and subject.endswith("s")
        and not subject.endswith("ss")
    )


def indirect_action(words: Sequence[str]) -> str | None:
    """The action an indirect request in this clause asks for, or None (see the module docs)."""
    if not words or is_question(words):
        return None
    text = _joined(words)
    narrated = is_narrated(words)
    for pattern, action, any_subject in _PATTERNS:
        if (any_subject or not narrated) and pattern.search(text):
            return action
    return None


# -- stop -----------------------------------------------------------------------------------

_STOP_VERBS = frozenset("stop quit cease halt pause stahp stopp".split())
#: Words that may come before the stop verb in a request to stop ("can we stop", "you can quit").
_STOP_LEAD = frozenset(
    """can could would will we you u please i'd i like want need to let's lets let us ok okay alright
    now just so hey guys you'll gonna going have got gotta must should might maybe time it's its why
    oh well right all and then finally already kindly said say told tell""".split()
)
#: What may follow it ("stop it", "quit that", "stop with the bowing", "stop here").
_STOP_NEXT = frozenset(
    """it that this there here now already please right for with the all your doing everything
    moving what those these immediately a sec second minute moment""".split()
)
#: Words a bare "enough" clause may carry ("enough is enough", "that's quite enough now").
_ENOUGH_CLAUSE = frozenset(
    """that's thats that is quite more than already now ok okay alright really seriously right there all
    it i've ive had seen i think for today with of the this those guys oh well man yeah pretty much
    just enough been plenty way too""".split()
)
_STOP_IDIOMS = tuple(
    re.compile(p)
    for p in (
        r"^(?:put|bring) (?:a stop|an end|a halt|a lid|the brakes|a cork) (?:to|on|in)\b",
        r"^(?:pump|hit) the brakes\b",
        r"^(?:cancel|abort|scrap|forget|belay) (?:that|it|this|all that|everything)\b",
        r"^(?:lay|ease|back|let up|leave) off\b",
        r"^ease up\b",
        r"^(?:wrap|pack) (?:it|this|that|things) up\b",
        r"^(?:pack|jack|knock) (?:it|that|this) in\b",
        r"^can it\b",
        r"^(?:that's|thats|that is) (?:a wrap|it|all)(?: for now| for today| now)?$",
        r"^call it (?:quits|a day|a night)\b",
        rf"^(?:take|have) (?:five|ten|a breather|a break|a pause|a time out|a timeout)\b(?! (?:on|in) (?:\S+ )?{SEAT}\b)",
        r"^(?:settle|simmer|calm|wind|slow) (?:down|it down)\b",
        r"^hold (?:your horses|everything|on|on a sec|on a second|on a minute|still)\b",
        rf"^give (?!{YOUR} {BODY}\b)"
        r"(?:it|that|this|\S+ing|the \S+|your \S+|those \S+|all the \S+|all that \S+)(?: \S+)? "
        r"a (?:rest|break|breather)\b",
        r"^(?:we're|you're|we are|you are) (?:done|finished)(?: \S+ing)?(?: now| here| for now| for today)?$",
        r"^(?:let's|lets|let us) (?:stop|pause|take a break|call it)\b",
        r"^(?:keep|stay|remain|hold)(?: perfectly| completely| totally| very| dead| stock| absolutely| really| real)? "
        r"(?:still|calm|put|motionless|frozen|stationary|immobile|in place)\b",
        # The gesture held, let go: "you can put your hand down now", "lower your arms".
        r"^(?:put|bring|take|drop|lower) (?:your|ur|that|those|the|both) (?:hand|hands|arm|arms)(?: back)? (?:down|away)\b",
        r"^(?:arm|arms) down(?: now| please)?$",  # "hands down" is also "without doubt"
        r"^lower (?:your|ur|that|those|the|both) (?:hand|hands|arm|arms)\b",
        r"^stay (?:where you are|right there|right where you are)\b",
        r"^(?:don't|dont|do not) (?:move|budge|fidget|you move|you dare move|move a muscle)\b",
        r"^(?:hang|hold) (?:on|about|up|it|tight)\b",
        r"^(?:one|just a|wait a|gimme a|give me a) (?:sec|second|moment|minute|mo)$",
        # A stopping verb with the activity as its object: "knock off the clapping", "cut
        # out the nodding", "drop the dancing", "quit with the pointing", "lose the frowning".
        r"^(?:knock|cut|leave|lay|drop|ditch|lose|quit|skip|can|nix|kill|scrap|forget|pack|cool) (?:off |out |in |it )?"
        r"(?:with )?(?:the|all the|all that|all this|that|this|those|these|your|ur|all your|with)"
        r"(?: \S+)? (?!(?:meeting|wedding|building|evening|morning|thing|something|nothing|anything|everything|"
        r"ceiling|painting|ring|king|string|feeling|clothing|ending|beginning|pudding|stuffing|spring|swing|wing)\b)"
        r"\S+ing\b",
    )
)


def stop_phrasing(words: Sequence[str]) -> int | None:
    """How many leading words ask to stop (the rest may name what to stop), or None.

    Beyond the fixed STOP_PHRASES of the lexicon: a stop verb after a few request words
    ("can we stop with the bowing", "you can quit waving now"), stop idioms ("put a stop to",
    "give the waving a break", "lay off", "wrap it up", "take five"), and a clause that is
    only "enough" with filler ("enough is enough", "that's quite enough now").
    """
    if not words:
        return None
    for i, w in enumerate(words[:6]):
        if w in _STOP_VERBS:
            if all(x in _STOP_LEAD for x in words[:i]):
                rest = words[i + 1 :]
                if not rest or rest[0] in _STOP_NEXT or str(rest[0]).endswith("ing"):
                    return i + 1
            break
    if "enough" in words and all(w in _ENOUGH_CLAUSE or str(w).endswith("ing") for w in words):
        return len(words)
    text = _joined(words)
    soft = _SOFTENER.match(text)  # "maybe give the dancing a rest now", "okay just cancel that"
    lead = len(soft.group(0).split()) if soft else 0
    rest = text[soft.end() :] if soft else text
    for pattern in _STOP_IDIOMS:
        m = pattern.search(rest)
        if m:
            return lead + len(rest[: m.end()].split())
    return None


#: Words that soften a stop idiom in front of it ("maybe give it a rest", "okay, just cancel that").
_SOFTENER = re.compile(r"^(?:(?:maybe|perhaps|just|ok|okay|alright|right|now|please|so|well|oh|hey|guys|um|uh) )+")


# -- statements --------------------------------------------------------------------------

#: Finite verbs after an "-ing" subject: "dancing is my hobby", "walking to work takes an hour".
_FINITE = frozenset(
    """is isn't are aren't was wasn't were weren't has have had gives gave makes made takes took helps
    hurts hurt seems sounds feels keeps gets got means costs burns looks can could will won't would
    should must might does doesn't did used""".split()
)


def gerund_subject(words: Sequence[str]) -> bool:
    """True for a statement whose subject is an activity ("sitting too long gives me back
    pain", "standing desks are popular"): it names an action but asks for none."""
    if len(words) < 2:
        return False
    first = str(words[0])
    if first.endswith("ing's"):
        return True
    if not (first.endswith("ing") and len(first) > 5):
        return False
    return any(w in _FINITE for w in words[1:8])


def music_context(text: str) -> bool:
    """Whether the utterance talks about music ("the beat dropped, move those feet"): then
    a bare "move" asks for a dance, not a walk."""
    return re.search(rf"\b{MUSIC}\b", text.lower()) is not None


#: Past forms of the core actions' verbs that the "-ed" rule misses.
_IRREGULAR_PAST = frozenset("sat stood rose thought went shook bowed".split())
#: "-ed" words that ask for something ("be seated", "get excited", "look surprised").
_NOT_PAST = frozenset("seated excited surprised confused tired relaxed amazed interested".split())


def past_tense(word: str) -> bool:
    """A past form of a verb ("danced", "stood"): an action named that way is being told
    about ("up until now I never danced"), since a request is never in the past tense."""
    w = str(word)
    if w in _IRREGULAR_PAST:
        return True
    return len(w) > 4 and w.endswith("ed") and w not in _NOT_PAST


# -- request frames ------------------------------------------------------------------------

#: Frames a request is wrapped in: a wish about the listener ("I'd love to see you dance",
#: "it would make my day if you clapped"), a question about ability or willingness ("are
#: you able to", "is it possible for you to", "any chance you could", "do you think you
#: could", "mind"), an obligation said to the listener ("you gotta", "ya got to"). What
#: follows the frame is the request; a wish about the speaker ("I'd love to dance someday")
#: has no "you" and is no frame.
_FRAMES = tuple(
    re.compile(p)
    for p in (
        r"^(?:i|i'd|id|i would|i'll|we|we'd|we would|i really|i'd really|i'd so|i would really|i'd just|i do|"
        r"i'd honestly|i'd actually)(?: really| so| just| truly| honestly)? (?:love|like|enjoy|want|wanna|wish|adore|"
        r"be thrilled|be happy|be delighted|be glad|like it|love it) (?:to )?(?:see|watch|have) you(?: to)?(?= )",
        r"^(?:i|i'd|i would|we'd|we would)(?: really| so| just)? (?:love|like|appreciate|prefer|enjoy|be "
        r"(?:happy|glad|grateful|thrilled|delighted|so grateful|really grateful|very grateful|thankful|obliged)) "
        r"(?:it )?(?:if you'd|if you'll|if you|for you to)(?: could| would| can)?(?= )",
        # A hypothetical put to the listener: "what if you stood up", "suppose you sat down",
        # "if only you'd dance", "how about if you clapped" (the past tense is the subjunctive's:
        # `frames.rewrite` reads it as the base form).
        r"^(?:so |well |hmm |ok |okay )?(?:what if|suppose|supposing|how about if|what about if|if only|imagine if) "
        r"(?:you|u)(?:'d| would| could| just| were to)?(?= )",
        # "if you clapped, that would cheer me up", "if you could wave, I'd be thrilled": only the
        # hypothetical's past or a modal ("if you sit too long your back hurts" states a rule).
        r"^if (?:you|u)(?:'d| would| could| just| were to)(?= )",
        # Hopes put to the listener: "I hope you'll take a bow", "we're hoping you can wave".
        r"^(?:i|we)(?: really| do| sure| truly)? hope (?:that )?(?:you'll|you will|you can|you could|you'd|you would|"
        r"you might|u will|u can)(?= )",
        # "it's time you got up", "it's about time you took a bow", "it's your turn to dance",
        # "it's time for you to bow", "it wouldn't hurt to take a bow", "would it kill you to smile".
        r"^(?:i think |maybe |perhaps |ok |okay |so |well |now )?(?:it's|it is|its|now it's|now's|now is)"
        r"(?: about| high| really| finally)? time (?:for you to|that you|you|u)(?= )",
        r"^(?:i think |so |ok |okay |well |now )?(?:it's|it is|its|now it's) (?:your|ur) (?:turn|go|cue) to(?= )",
        r"^(?:so |well )?(?:it|that) (?:wouldn't|would not|won't|will not|can't|cannot) (?:hurt|harm)(?: you)?"
        r"(?: \S+)? to(?= )",
        r"^(?:so )?would it kill (?:you|ya|u) to(?= )",
        # Invitations put as questions: "how would you feel about waving", "what do you say we
        # dance", "you wouldn't mind clapping, would you", "why don't we sit", "you're welcome to sit".
        r"^how would (?:you|u) feel about(?= )",
        # "do you want to sit?" offers, now ("do you want to dance at your wedding someday?" asks about plans)
        r"^(?:do|d'you|dyou) (?:you |u )?(?:want to|wanna)(?= )(?!.*\b(?:later|tomorrow|tonight|someday|sometime|"
        r"one day|next|again|ever|when|at your)\b)",
        r"^what (?:do you|d'you|would you) say (?:we|you|to)(?= )",
        r"^what say (?:we|you)(?= )",
        r"^(?:you|u) (?:wouldn't|wouldnt|would not|won't|wont) mind(?= )",
        r"^why (?:don't|dont|do not) we(?: both| all| just)?(?= )",
        r"^(?:you're|you are|ur|you're more than|you are more than) (?:very |more than |always )?welcome to(?= )",
        r"^(?:it|that|it'd|that'd|it'll|that'll)(?: would| will| really would| would really)? "
        r"(?:make my day|make me (?:happy|smile|so happy)|mean a lot|help(?: me| us)?(?: out)?(?: a lot| a ton)?|be (?:\S+ ){0,2}?(?:great|nice|lovely|cool|awesome|"
        r"amazing|fun|wonderful|brilliant|sweet|perfect|good|helpful|fab|fantastic|ace|epic|hilarious|cute)) "
        r"(?:if you|to see you)(?: could| would| can)?(?= )",
        # Someone else's wish about the listener: "my little brother wants to see you wave".
        r"^(?!(?:nobody|no one|noone|none of)\b)(?:\S+ ){1,4}?(?:wants|want|would love|would like|'d love|'d like|is dying|are dying|can't wait|cant wait|"
        r"is hoping|are hoping|is waiting|are waiting) to (?:see|watch) you(?= )",
        r"^(?:are|were|would|will) you (?:be )?(?:able|willing|ready|up for it|happy|okay|ok) to(?= )",
        r"^(?:is|would|will) it (?:be )?(?:possible|ok|okay|alright|all right|cool|fine) (?:for you to|if you|to)(?= )",
        r"^(?:is there )?(?:any|some) (?:chance|way|possibility) (?:you|that you|of you|for you to|you'd)"
        r"(?: could| can| would| might| will| to)?(?= )",
        r"^(?:do|d'you|dyou|don't|dont) (?:you )?(?:think|reckon|suppose|guess) (?:you )?(?:could|can|might|would|will|"
        r"are able to)(?= )",
        # "do you like to walk?" asks about tastes; "would you like to" invites.
        r"^(?:would|will|could) you (?:mind|care to|like to|want to|wanna|be so kind as to|be kind enough to)(?= )",
        r"^(?:do you|d'you) mind(?= )",
        r"^(?:you|ya|u|y'all) (?:wanna|want to|feel like|fancy|got to|gotta|have got to|need to|have to|oughta)(?= )",
        r"^(?:could|can|would|will) you (?:maybe|possibly|perhaps|please|kindly|just|quickly|now)"
        r"(?: please| just| maybe)?(?= )",
        r"^(?:mind|care to|fancy|how about you|how about|what about you|what about)(?= )",
        r"^(?:i|we) (?:dare|challenge|bet) you (?:to|can't|cant|can)(?= )",
        r"^(?:show me|show us|let me see|let us see|let's see) (?:if |whether )?(?:you can|how you|you)(?= )",
    )
)


#: Words that show what follows a frame is no request ("I'd love to see you again", "how
#: about the weather", "you gotta be kidding", "it'd be great if you told me a story").
_NOT_AFTER_FRAME = frozenset(
    """again sometime soon later today tomorrow tonight there here more around be being is are was were
    the a an my your his her their our this that these those it its told said asked talked spoke explained
    knew thought were had got if""".split()
)


def request_frame(words: Sequence[str]) -> int | None:
    """How many leading words wrap a request in a frame (see `_FRAMES`), or None when there
    is no frame or what follows it is not a request."""
    if len(words) < 3:
        return None
    text = _joined(words[:14])
    for pattern in _FRAMES:
        m = pattern.match(text + " ")
        if m:
            n = len(m.group(0).split())
            return n if n < len(words) and str(words[n]) not in _NOT_AFTER_FRAME else None
    return None


#: "-ly" adverbs and their adjectives that set how strongly something is done.
_STRONG = frozenset(
    """violent vigorous emphatic energetic intense fierce wild frantic enthusiastic passionate forceful strong
    powerful dramatic exaggerated hearty wholehearted animated lively bold theatrical manic exuberant vehement
    furious mad crazy wild big huge loud broad wide deep bright full proud massive giant enormous grand
    extravagant flamboyant zealous ardent feverish rapid brisk firm hysterical uncontrollable uproarious
    almighty tremendous thunderous resounding mighty fervent rowdy boisterous""".split()
)
_FAINT = frozenset(
    """gentle soft slight subtle faint quiet calm light slow tentative timid hesitant delicate mild weak small
    tiny brief discreet modest restrained reserved understated cautious careful feeble meek lazy shy
    half-hearted halfhearted lukewarm minimal minute wee""".split()
)


#: Every base word that sets a degree, strong or faint ("subtle", "wild").
DEGREE_BASES = _STRONG | _FAINT


def intensity_word(word: str) -> str | None:
    """"high", "low" or None for one word, read through its derivations: "-ly" adverbs
    ("vigorously", "tentatively", "emphatically", "gently") and superlatives ("faintest",
    "slightest", "wildest")."""
    w = str(word)
    for base in _bases(w):
        if base in _STRONG:
            return "high"
        if base in _FAINT:
            return "low"
    return None


def _bases(w: str) -> list[str]:
    out = [w]
    if w.endswith("ically"):
        out.append(w[:-4])  # emphatically → emphatic
    if w.endswith("ily"):
        out.append(w[:-3] + "y")  # lazily → lazy
    if w.endswith("ly"):
        out.append(w[:-2])  # vigorously → vigorous
        if not w.endswith("lly"):
            out.append(w[:-1] + "e")  # gently → gentle, subtly → subtle, feebly → feeble
    if w.endswith("iest"):
        out.append(w[:-4] + "y")  # tiniest → tiny
    if w.endswith("est"):
        core = w[:-3]
        out += [core, core + "e"]
        if len(core) > 2 and core[-1] == core[-2]:
            out.append(core[:-1])  # biggest → big
    return out


_BEST_EFFORT = (
    re.compile(r"\byou (?:possibly |ever |physically )?can(?: make| do| manage| muster| pull| give| get| go)?$"),
    re.compile(r"\bas \S+ as (?:you can|you possibly can|possible|you dare|you like|you want)\b"),
    re.compile(r"\b(?:your|ur|yer) (?:head|eyes|socks|heart|butt|bum|lungs|pants|guts|face|booty|feet) (?:off|out)\b"),
    re.compile(r"\bwith all (?:your|ur|yer|of your) (?:might|heart|strength|energy|soul|being)\b"),
    re.compile(r"\b(?:like|as if|like there's) (?:there's |there is )?no tomorrow\b"),
    re.compile(r"\b(?:like|as if) (?:your|ur) life depends on it\b"),
)


def best_effort(words: Sequence[str]) -> bool:
    """The clause asks for all the listener has: "as wide as you can", "the happiest face
    you can make", "laugh your head off", "cry your eyes out", "with all your might"."""
    text = _joined(words)
    return any(p.search(text) for p in _BEST_EFFORT)


#: A gerund after a preposition and a determiner names an activity as a thing ("after all
#: that dancing", "from all the standing", "tired of all this walking"): not asked for.
_ADJUNCT = re.compile(
    r"\b(?:after|from|with|of|by|since|despite) (?:all (?:that|this|the|those|these|of that|of this|of the|your|my)|"
    r"that|this|the|so much|too much|all|your|my) (?:\S+ )?(\S+ing)\b"
)


def activity_adjuncts(words: Sequence[str]) -> tuple[int, int] | None:
    """(start, end) word positions of a phrase like "after all that dancing" (see
    `_ADJUNCT`), or None; only when something else is left in the clause."""
    text = " ".join(str(w) for w in words)
    m = _ADJUNCT.search(text)
    if m is None or not m.group(1)[:-3].isalpha() or len(m.group(1)) < 6:
        return None
    start = len(text[: m.start()].split())
    end = start + len(m.group(0).split())
    return (start, end) if end - start < len(words) else None


#: "go for it", "go wild": on their own they ask for nothing namable; after music or a seat
#: was mentioned they ask for a dance or a sit ("that armchair looks comfy, go for it").
_GO_AHEAD = re.compile(
    r"^(?:go for it|go on|go ahead|be my guest|help yourself|don't be shy|dont be shy|it's all yours|all yours|"
    r"knock yourself out|feel free|why not|you know you want to|come on|c'mon|cmon|let's go|lets go|come on then|"
    r"what are you waiting for|don't be shy then|your turn)$"
)
_GO_WILD = re.compile(
    r"^(?:go|get) (?:wild|crazy|nuts|mad|bananas|ham|all out|for it|off|loose|feral|berserk|hard)(?: \S+)?$"
)


def go_ahead(words: Sequence[str]) -> str | None:
    """"ahead" for a bare go-ahead ("go for it"), "wild" for "go wild"/"go crazy", or None."""
    text = _joined(words)
    if _GO_AHEAD.match(text):
        return "ahead"
    if _GO_WILD.match(text):
        return "wild"
    return None


def seat_context(text: str) -> bool:
    """Whether the utterance talks about a seat ("that armchair looks comfy")."""
    return re.search(rf"\b{SEAT}\b", text.lower()) is not None
