"""The conversation manager: budgeted history, system prompt from the card, greeting, reset."""

from __future__ import annotations

import pytest

from comfyui_persona.persona.card import Lines, Persona
from comfyui_persona.persona.conversation import Conversation, estimate_tokens
from comfyui_persona.persona.interpreter.base import Turn
from comfyui_persona.persona.library import load_persona
from comfyui_persona.persona.schema import VocabularyEntry


def _persona(**changes) -> Persona:
    base = dict(
        id="tess",
        name="Tess",
        description="{{char}} is a lighthouse keeper.",
        personality="Stoic but kind.",
        backstory="Tess has kept the Fairhaven light for twenty years.",
        first_message="Evening, {{user}}. Storm's coming.",
        constraints=("Never mention the ghost.", "Keep it short."),
    )
    base.update(changes)
    return Persona(**base)


def test_history_is_turns_in_order_with_roles():
    conversation = Conversation(_persona())
    conversation.add_user("hello")
    conversation.add_persona("hi!")
    assert conversation.history == (Turn(role="user", text="hello"), Turn(role="persona", text="hi!"))
    assert isinstance(conversation.history, tuple)


def test_budget_trims_oldest_turns_first():
    conversation = Conversation(_persona(), budget_chars=25)
    for i in range(6):
        conversation.add_user(f"message {i}")  # 9 characters each
    assert [t.text for t in conversation.history] == ["message 4", "message 5"]
    assert conversation.history_chars() <= 25
    assert conversation.dropped_turns == 4


def test_newest_turn_is_kept_even_when_alone_over_budget():
    conversation = Conversation(_persona(), budget_chars=10)
    conversation.add_user("short")
    conversation.add_persona("x" * 50)
    assert [t.text for t in conversation.history] == ["x" * 50]


def test_budget_must_be_positive():
    with pytest.raises(ValueError, match="budget_chars"):
        Conversation(_persona(), budget_chars=0)


def test_token_estimate_is_a_quarter_of_the_characters_rounded_up():
    assert estimate_tokens("") == 0 and estimate_tokens("abcd") == 1 and estimate_tokens("abcde") == 2
    conversation = Conversation(_persona())
    before = conversation.estimated_tokens()
    conversation.add_user("a" * 400)
    assert conversation.estimated_tokens() == before + 100


def test_reset_forgets_history_but_keeps_persona_and_budget():
    conversation = Conversation(_persona(), budget_chars=25)
    for i in range(5):
        conversation.add_user(f"message {i}")
    conversation.reset()
    assert conversation.history == () and conversation.dropped_turns == 0
    assert conversation.budget_chars == 25 and conversation.persona.name == "Tess"


def test_system_prompt_carries_the_card():
    prompt = Conversation(_persona(), user_name="Sam").system_prompt()
    assert prompt.startswith("You are Tess.")
    assert "Tess is a lighthouse keeper." in prompt  # {{char}} filled in
    for text in (
        "Stoic but kind.",
        "Fairhaven light",
        "- Never mention the ghost.",
        "- Keep it short.",
        "Sam",
    ):
        assert text in prompt, text
    assert "{{" not in prompt


def test_system_prompt_lists_only_the_allowed_vocabulary_with_extras():
    spin = VocabularyEntry(
        name="spin", description="Turn a full circle.", synonyms=("spin",), phrase="spinning"
    )
    smug = VocabularyEntry(name="smug", description="A self-satisfied look.", phrase="looking smug")
    persona = _persona(
        allowed_actions=("wave", "nod", "spin"), extra_actions=(spin,), extra_expressions=(smug,)
    )
    prompt = Conversation(persona).system_prompt()
    for line in (
        "- wave:",
        "- nod:",
        "- idle:",
        "- spin: Turn a full circle.",
        "- smug: A self-satisfied look.",
        "- smile:",
    ):
        assert line in prompt, line
    for line in ("- dance:", "- sit:", "- walk:"):
        assert line not in prompt, line


def test_system_prompt_includes_card_instructions_from_other_tools():
    card = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": "Tess",
            "system_prompt": "{{original}} Write as {{char}}.",
            "post_history_instructions": "Be brief.",
        },
    }
    prompt = Conversation(_persona(card=card)).system_prompt()
    assert "Write as Tess." in prompt and "{{original}}" not in prompt
    assert prompt.rstrip().endswith("Be brief.")


def test_greeting_is_the_first_message_with_macros_filled():
    assert Conversation(_persona(), user_name="Sam").greeting() == "Evening, Sam. Storm's coming."
    fallback = _persona(first_message="", lines=Lines(greeting=("Ahoy.",)))
    assert Conversation(fallback).greeting() == "Ahoy."
    conversation = Conversation(_persona())
    conversation.greeting()
    assert conversation.history == ()  # showing it is the caller's choice


@pytest.mark.parametrize("persona_id", ["mira", "sol", "kenji"])
def test_builtin_personas_make_a_prompt_and_greeting(persona_id):
    persona = load_persona(persona_id)
    conversation = Conversation(persona)
    assert conversation.greeting() == persona.first_message
    prompt = conversation.system_prompt()
    assert persona.name in prompt and persona.appearance.description in prompt
    if persona.allowed_actions is not None:
        assert "- dance:" not in prompt


def test_chat_messages_are_openai_shaped():
    conversation = Conversation(_persona())
    conversation.add_user("hi")
    conversation.add_persona("evening")
    messages = conversation.chat_messages("wave please")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"] == conversation.system_prompt() and messages[-1]["content"] == "wave please"


def test_system_prompt_carries_the_cards_example_dialogue_within_its_budget():
    from comfyui_persona.persona.conversation import EXAMPLE_BUDGET_CHARS, example_dialogue

    lines = "\n".join(f"{{{{user}}}}: question {i}\n{{{{char}}}}: answer {i} " + "x" * 60 for i in range(100))
    persona = Persona(id="ex", name="Ex", card={"data": {"mes_example": "<START>\n" + lines}})
    examples = example_dialogue(persona)
    assert examples.startswith("User: question 0\nEx: answer 0")
    assert "<START>" not in examples and "{{" not in examples
    assert len(examples) <= EXAMPLE_BUDGET_CHARS
    assert "User: question 3" in Conversation(persona).system_prompt()
    assert example_dialogue(Persona(id="none", name="None")) == ""
