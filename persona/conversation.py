"""The conversation with one persona: history within a budget, the system prompt, the greeting.

Budget: history is measured in characters (`budget_chars`, default 12 000). Whenever it
is over budget the oldest turns are dropped, whole, until it fits; the newest turn is
always kept even when it alone is larger. Characters rather than tokens because the
embedded backend has no tokenizer and every LLM tokenizer differs; `estimated_tokens`
converts with the common rule of thumb of ~4 characters per token for English, so
`budget_chars=12_000` is roughly a 3 000-token history (plus the system prompt).
"""

from __future__ import annotations

import re

from ..errors import PersonaError
from .card import Persona
from .interpreter.base import Turn
from .schema import Vocabulary

__all__ = [
    "ConversationBudgetError","CHARS_PER_TOKEN", "DEFAULT_BUDGET_CHARS", "Conversation", "estimate_tokens"]

#: Rough characters per token for English text (OpenAI's published rule of thumb).
CHARS_PER_TOKEN = 4
DEFAULT_BUDGET_CHARS = 12_000
#: Most of the card's example dialogue (`mes_example`) the system prompt carries.
EXAMPLE_BUDGET_CHARS = 1_600


class ConversationBudgetError(PersonaError, ValueError):
    """A conversation budget below its minimum."""


def estimate_tokens(text: str) -> int:
    """A tokenizer-free token estimate: ceil(chars / 4)."""
    return -(-len(text) // CHARS_PER_TOKEN)


def fill_macros(text: str, persona_name: str, user_name: str = "the user") -> str:
    """Replace the card macros `{{char}}`/`<BOT>` and `{{user}}`/`<USER>` (case-insensitive)."""
    text = re.sub(r"\{\{char\}\}|<bot>", persona_name, text, flags=re.IGNORECASE)
    text = re.sub(r"\{\{user\}\}|<user>", user_name, text, flags=re.IGNORECASE)
    return re.sub(r"\{\{original\}\}", "", text, flags=re.IGNORECASE)


class Conversation:
    """History, system prompt and greeting for one persona.

    `add_user`/`add_persona` append turns; `history` is the trimmed, immutable view
    interpreters receive (`InterpretRequest.history`). `reset()` forgets everything.
    """

    def __init__(
        self, persona: Persona, budget_chars: int = DEFAULT_BUDGET_CHARS, user_name: str = "the user"
    ):
        if budget_chars < 1:
            raise ConversationBudgetError(f"budget_chars must be at least 1, got {budget_chars}")
        self.persona = persona
        self.budget_chars = budget_chars
        self.user_name = user_name
        self._turns: list[Turn] = []
        self.dropped_turns = 0  # how many turns the budget has trimmed since the last reset

    # ------------------------------------------------------------------ history
    @property
    def history(self) -> tuple[Turn, ...]:
        return tuple(self._turns)

    def add_user(self, text: str) -> Turn:
        return self._add(Turn(role="user", text=text))

    def add_persona(self, text: str) -> Turn:
        return self._add(Turn(role="persona", text=text))

    def _add(self, turn: Turn) -> Turn:
        self._turns.append(turn)
        self._trim()
        return turn

    def history_chars(self) -> int:
        return sum(len(turn.text) for turn in self._turns)

    def estimated_tokens(self) -> int:
        """Tokens of system prompt plus history, estimated (see module docstring)."""
        return estimate_tokens(self.system_prompt()) + sum(estimate_tokens(t.text) for t in self._turns)

    def _trim(self) -> None:
        total = self.history_chars()
        while total > self.budget_chars and len(self._turns) > 1:
            total -= len(self._turns.pop(0).text)
            self.dropped_turns += 1

    def chat_messages(self, user_text: str | None = None) -> list[dict[str, str]]:
        """OpenAI-style messages: the system prompt, the history, then `user_text` if given.

        Persona turns become `assistant` messages; `system` turns stay `system`.
        """
        roles = {"user": "user", "persona": "assistant", "system": "system"}
        messages = [{"role": "system", "content": self.system_prompt()}]
        messages += [{"role": roles[turn.role], "content": turn.text} for turn in self._turns]
        if user_text is not None:
            messages.append({"role": "user", "content": user_text})
        return messages

    def reset(self) -> None:
        """Forget the history (the persona and budget stay)."""
        self._turns.clear()
        self.dropped_turns = 0

    # ------------------------------------------------------------------ prompts
    def greeting(self) -> str:
        """The persona's opening line: the card's `first_mes`, else its first greeting line.

        Not added to the history: call `add_persona(conversation.greeting())` when it is shown.
        """
        persona = self.persona
        text = persona.first_message.strip() or (persona.lines.greeting[0] if persona.lines.greeting else "")
        return fill_macros(text, persona.name, self.user_name)

    def system_prompt(self) -> str:
        """Instructions for an LLM backend, built from the card and the persona's vocabulary."""
        persona = self.persona
        name = persona.name

        def fill(text: str) -> str:
            return fill_macros(text.strip(), name, self.user_name)

        parts = [f"You are {name}. Stay in character as {name} in a live video chat with {self.user_name}."]
        card_data = persona.card.get("data") if isinstance(persona.card.get("data"), dict) else {}
        card_system = card_data.get("system_prompt") if isinstance(card_data, dict) else None
        if isinstance(card_system, str) and card_system.strip():
            parts.append(f"Card instructions:\n{fill(card_system)}")
        for title, text in (
            ("Description", persona.description),
            ("Appearance", persona.appearance.description),
            ("Personality", persona.personality),
            ("Backstory and scenario", persona.backstory),
            ("Speaking style", persona.voice.style),
        ):
            if text.strip():
                parts.append(f"{title}:\n{fill(text)}")
        if persona.constraints:
            rules = "\n".join(f"- {fill(rule)}" for rule in persona.constraints)
            parts.append(f"Rules you always keep:\n{rules}")
        parts.append(_vocabulary_section(persona.vocabulary()))
        parts.append(
            "Reply briefly (one to three sentences), spoken aloud, in character. Only perform "
            "actions and expressions from the lists above; if asked for something else, say so "
            "in character and offer the closest listed one."
        )
        examples = example_dialogue(persona, self.user_name)
        if examples:
            parts.append(f"How {name} talks (example dialogue):\n{examples}")
        post = card_data.get("post_history_instructions") if isinstance(card_data, dict) else None
        if isinstance(post, str) and post.strip():
            parts.append(f"Also:\n{fill(post)}")
        return "\n\n".join(parts)


def example_dialogue(persona: Persona, user_name: str = "the user", budget_chars: int = EXAMPLE_BUDGET_CHARS) -> str:
    """The card's `mes_example` with macros filled, `<START>` separators dropped, and cut
    at a line boundary to `budget_chars` (whole exchanges first: a card's examples can run
    to thousands of tokens, more than a small local model's whole context)."""
    data = persona.card.get("data") if isinstance(persona.card.get("data"), dict) else persona.card
    raw = data.get("mes_example") if isinstance(data, dict) else None
    if not isinstance(raw, str) or not raw.strip():
        return ""
    speaker = user_name if user_name != "the user" else "User"
    text = fill_macros(raw, persona.name, speaker)
    lines = [line.rstrip() for line in text.splitlines() if line.strip() and line.strip().upper() != "<START>"]
    kept: list[str] = []
    total = 0
    for line in lines:
        if total + len(line) + 1 > budget_chars:
            break
        kept.append(line)
        total += len(line) + 1
    return "\n".join(kept)


def _vocabulary_section(vocabulary: Vocabulary) -> str:
    actions = "\n".join(f"- {entry.name}: {entry.description}" for entry in vocabulary.actions)
    expressions = "\n".join(f"- {entry.name}: {entry.description}" for entry in vocabulary.expressions)
    return f"Actions you can perform:\n{actions}\n\nExpressions you can show:\n{expressions}"
