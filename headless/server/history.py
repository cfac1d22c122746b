"""A session's visible conversation, bounded, for the `ready.history` a resumed viewer redraws.

Why the server keeps it: a reload (or a second device resuming the session) has no DOM left,
while the session, its character state and its interpreter memory live on here. The page must
show the same bubbles the viewer saw, in the same order, so the server (which sees every turn
and every reply) records them as they pass: user messages when accepted, the persona's
directives and reply text as they are sent. Only the newest `HISTORY_LIMIT` entries are kept
(older ones drop off the front), which bounds what a long-running session holds and what one
`ready` message carries.

Kept in memory only: a server restart starts every session anew (the page says so).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["HISTORY_LIMIT", "ConversationLog", "HistoryEntry"]

#: Entries (user messages and persona replies together) a session keeps for `ready.history`.
HISTORY_LIMIT = 200


@dataclass
class HistoryEntry:
    """One bubble: a user message (`chat` text or a manual `action`) or a persona reply."""

    role: Literal["user", "persona"]
    id: str  # user: the client's message id; persona: the message it answers (`reply_to`)
    kind: Literal["chat", "action"]
    text: str = ""
    directives: list[dict] | None = None  # persona: as in the `directives` message; user action: [directive]
    done: bool = False  # persona: the whole reply text has arrived
    character: str | None = None  # a scene's line: who says it (one entry per speaker, as the viewer saw)

    def public(self) -> dict:
        out: dict = {"role": self.role, "kind": self.kind, "text": self.text}
        if self.role == "user":
            out["id"] = self.id
        else:
            out["reply_to"] = self.id
            out["done"] = self.done
        if self.character is not None:
            out["character"] = self.character
        if self.directives is not None:
            out["directives"] = self.directives
        return out


@dataclass
class ConversationLog:
    """The newest `limit` entries of one session, in the order the viewer saw them."""

    limit: int = HISTORY_LIMIT
    entries: collections.deque[HistoryEntry] = field(init=False)

    def __post_init__(self) -> None:
        self.entries = collections.deque(maxlen=self.limit)

    def user(self, message_id: str, kind: Literal["chat", "action"], text: str, directive: dict | None = None) -> None:
        self.entries.append(HistoryEntry("user", message_id, kind, text, [directive] if directive else None, True))

    def directives(self, reply_to: str | None, directives: list[dict]) -> None:
        entry = self._reply_entry(reply_to)
        entry.directives = directives
        if entry.kind == "action":
            entry.done = True  # the directive is the answer; a `dialogue` reply may follow

    def reply(self, reply_to: str | None, text: str, done: bool) -> None:
        entry = self._reply_entry(reply_to)
        entry.text = text
        entry.done = done

    def line(self, reply_to: str | None, character: str, text: str) -> None:
        """One speaker's line of a scene's answer: an entry of its own after the answer's
        directives entry (made first when new), as the viewer saw it: a bubble per speaker."""
        answer = self._reply_entry(reply_to)
        answer.done = True  # in a scene the lines are the text: the directives entry holds none
        self.entries.append(HistoryEntry("persona", answer.id, answer.kind, text, None, True, character))

    def public(self) -> list[dict]:
        return [entry.public() for entry in self.entries]

    def _reply_entry(self, reply_to: str | None) -> HistoryEntry:
        """The persona entry answering `reply_to`, made after its user message when new.

        Searched from the newest end: a reply is to one of the last few messages."""
        key = reply_to or ""
        kind: Literal["chat", "action"] = "chat"
        for entry in reversed(self.entries):
            if entry.id == key and entry.character is None:
                if entry.role == "persona":
                    return entry
                kind = entry.kind
                break
        entry = HistoryEntry("persona", key, kind)
        self.entries.append(entry)
        return entry
