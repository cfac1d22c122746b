"""The state tracker: turns the interpreter's directives into a coherent, timed plan and
answers "what is the character doing at time t" on the session clock (ms).

Pose graph. The nodes are `Pose` (standing, sitting, walking). Each action says, in its
`VocabularyEntry`, the poses it may start from (`from_poses`) and the pose it leaves
(`pose_after`, None: unchanged). Two kinds of pose-changing actions follow from that data:

- posture changes (`pose_after` set, walking not in `from_poses`: sit, stand): while they
  run the state is `transitioning` in the old pose; at their end the pose is `pose_after`.
  Asking for one when already in its `pose_after` is a no-op: it is dropped, or becomes
  `idle` when it carried dialogue or a non-neutral expression (so nothing said is lost).
- locomotion (walking in `from_poses`: walk): the pose is `walking` while it runs.

Before an action whose `from_poses` excludes the current pose, the shortest chain of
posture changes the vocabulary allows is inserted ("walk" while sitting → stand, walk);
when none exists (a persona that may not stand) the action is dropped with a note.

Timing. Each action runs `duration_s` if the directive gives one, else its
`default_duration_s`; the next starts when it ends; after the last one the character is
back to `idle` in the pose it was left in. An expression shows from its directive's start
for `duration_s` if given, else for the longer of the action's duration and the
expression's `default_duration_s`, then returns to `neutral`; a later directive's
expression replaces it. Intensity does not change timing.

A new `plan` interrupts by default: the running action stops at `now_ms` (its pose
change counts as done), pending ones are cancelled, and expressions shown so far end.
`interrupt=False` queues the new plan after what is scheduled instead.

`since_ms` is when the current state began: the last time any reported field changed.
History before the last pruning point (the earlier of the last `plan` time and the last
`advance` time, but at most `HISTORY_MS` = 60 s before the last `plan`) is forgotten:
`state_at`/`changes` for earlier times see the state at that point.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..errors import PersonaError
from .schema import ActionDirective, Activity, CharacterState, Pose, Vocabulary, VocabularyEntry

__all__ = ["PlanError", "StateTracker", "UnknownActionError"]

_NEUTRAL = "neutral"
_IDLE = "idle"
#: How far back `state_at`/`changes` can look even when `advance` is never called.
HISTORY_MS = 60_000
#: Intensity given to a transition the tracker inserts (nobody asked for it).
_INSERTED_INTENSITY = 0.5


class PlanError(PersonaError, ValueError):
    """A directive the tracker cannot plan."""


class UnknownActionError(PlanError):
    """A directive names an action or expression this persona's vocabulary does not have."""


@dataclass(frozen=True)
class _Segment:
    start_ms: int
    end_ms: int
    action: str
    pose_during: Pose
    pose_after: Pose
    transition: bool


@dataclass(frozen=True)
class _Face:
    start_ms: int
    end_ms: int
    expression: str


def _is_posture_change(entry: VocabularyEntry) -> bool:
    return entry.pose_after is not None and Pose.WALKING not in entry.from_poses


def _is_locomotion(entry: VocabularyEntry) -> bool:
    return Pose.WALKING in entry.from_poses and entry.name != _IDLE


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


class StateTracker:
    """Pose graph, schedule and state of one character on the session clock (ms)."""

    def __init__(self, vocabulary: Vocabulary, clock_ms: int = 0):
        self.vocabulary = vocabulary
        #: What the last `plan` changed or dropped, in words (for logs and the chat UI).
        self.notes: list[str] = []
        self._cursor_ms = clock_ms
        self._last_reported: CharacterState | None = None
        self.reset(clock_ms)

    # ------------------------------------------------------------------ control
    def reset(self, now_ms: int) -> None:
        """Back to standing idle with a neutral face, not speaking, from `now_ms`."""
        self._anchor_ms = now_ms
        self._anchor = CharacterState(since_ms=now_ms)
        self._segments: list[_Segment] = []
        self._faces: list[_Face] = []
        self._speaking: list[tuple[int, bool]] = []

    def resume_from(self, state: CharacterState, now_ms: int) -> None:
        """Go on from a state saved elsewhere (a session moved to another server): its pose
        (walking ends standing) and expression from `now_ms`, nothing scheduled."""
        self.reset(now_ms)
        pose = Pose.STANDING if state.pose == Pose.WALKING else state.pose
        self._anchor = CharacterState(pose=pose, expression=state.expression, since_ms=now_ms)

    def set_speaking(self, speaking: bool, now_ms: int) -> None:
        """The persona starts or stops talking at `now_ms` (the voice side knows when)."""
        self._speaking = [(t, s) for t, s in self._speaking if t < now_ms]
        self._speaking.append((now_ms, bool(speaking)))

    def plan(
        self, directives: list[ActionDirective], now_ms: int, *, interrupt: bool = True
    ) -> list[ActionDirective]:
        """A coherent, scheduled version of `directives`, starting at `now_ms`.

        Returns the directives that will be performed, in order, each with `duration_s`
        filled in; inserted transitions are included, no-ops removed (see `notes`).
        Raises `UnknownActionError` for a name outside the vocabulary.
        """
        for directive in directives:
            self._entry(directive.action)
            self._expression_entry(directive.expression)
        self.notes = []
        self._prune(max(min(now_ms, self._cursor_ms), now_ms - HISTORY_MS))
        if interrupt:
            start = now_ms
            self._segments = [
                seg if seg.end_ms <= now_ms else _shorten(seg, now_ms)
                for seg in self._segments
                if seg.start_ms < now_ms  # started: cut short; not started: cancelled
            ]
            self._faces = [
                face if face.end_ms <= now_ms else _Face(face.start_ms, now_ms, face.expression)
                for face in self._faces
                if face.start_ms < now_ms
            ]
        else:
            start = max([now_ms] + [seg.end_ms for seg in self._segments])
        pose = self._rest_pose(start)
        if pose == Pose.WALKING:
            pose = Pose.STANDING
        planned: list[ActionDirective] = []
        t = start
        for directive in directives:
            entry = self._entry(directive.action)
            if directive.action != _IDLE and _is_posture_change(entry) and entry.pose_after == pose:
                if directive.dialogue or directive.expression != _NEUTRAL:
                    self.notes.append(f"already {pose.value}: '{directive.action}' kept as idle")
                    directive = directive.model_copy(update={"action": _IDLE})
                    entry = self._entry(_IDLE)
                else:
                    self.notes.append(f"already {pose.value}: '{directive.action}' dropped")
                    continue
            if pose not in entry.from_poses:
                path = self._transitions(pose, entry)
                if path is None:
                    self.notes.append(
                        f"'{directive.action}' needs {', '.join(p.value for p in entry.from_poses)} "
                        f"and this persona cannot get there from {pose.value}: dropped"
                    )
                    continue
                for step in path:
                    self.notes.append(f"inserted '{step.name}' before '{directive.action}'")
                    inserted = ActionDirective(
                        action=step.name,
                        expression=directive.expression,
                        intensity=_INSERTED_INTENSITY,
                    )
                    t, pose = self._schedule(inserted, step, t, pose, planned)
            t, pose = self._schedule(directive, entry, t, pose, planned)
        return planned

    def _schedule(
        self,
        directive: ActionDirective,
        entry: VocabularyEntry,
        t: int,
        pose: Pose,
        planned: list[ActionDirective],
    ) -> tuple[int, Pose]:
        duration_s = directive.duration_s if directive.duration_s is not None else entry.default_duration_s
        end = t + _ms(duration_s)
        after = entry.pose_after or pose
        if directive.action != _IDLE:
            during = Pose.WALKING if _is_locomotion(entry) else pose
            self._segments.append(
                _Segment(t, end, directive.action, during, after, _is_posture_change(entry))
            )
        if directive.expression != _NEUTRAL:
            if directive.duration_s is not None:
                hold = _ms(directive.duration_s)
            else:
                hold = max(end - t, _ms(self._expression_entry(directive.expression).default_duration_s))
            self._faces.append(_Face(t, t + hold, directive.expression))
        planned.append(directive.model_copy(update={"duration_s": duration_s}))
        return end, after

    def _transitions(self, pose: Pose, target: VocabularyEntry) -> list[VocabularyEntry] | None:
        """Shortest chain of posture changes from `pose` to one of `target.from_poses`."""
        moves = [entry for entry in self.vocabulary.actions if _is_posture_change(entry)]
        queue: deque[tuple[Pose, list[VocabularyEntry]]] = deque([(pose, [])])
        seen = {pose}
        while queue:
            current, path = queue.popleft()
            if current in target.from_poses:
                return path
            for move in moves:
                if current in move.from_poses and move.pose_after not in seen:
                    assert move.pose_after is not None
                    seen.add(move.pose_after)
                    queue.append((move.pose_after, [*path, move]))
        return None

    def _entry(self, name: str) -> VocabularyEntry:
        try:
            return self.vocabulary.action(name)
        except KeyError as error:
            raise UnknownActionError(str(error.args[0])) from None

    def _expression_entry(self, name: str) -> VocabularyEntry:
        try:
            return self.vocabulary.expression(name)
        except KeyError as error:
            raise UnknownActionError(str(error.args[0])) from None

    # ------------------------------------------------------------------ queries
    def busy_until_ms(self) -> int:
        """When the last scheduled action ends (the anchor time when nothing is scheduled)."""
        return max([self._anchor_ms] + [seg.end_ms for seg in self._segments])

    def state_at(self, now_ms: int) -> CharacterState:
        """The character's state at `now_ms`, with `since_ms` when that state began."""
        state = self._anchor
        for _, changed in self._timeline(now_ms):
            state = changed
        return state

    def changes(self, since_ms: int, now_ms: int) -> list[CharacterState]:
        """Every state that began after `since_ms` and by `now_ms`, oldest first."""
        return [state for time, state in self._timeline(now_ms) if time > since_ms]

    def advance(self, now_ms: int) -> list[CharacterState]:
        """The states to report since the last `advance` (each once): what the server sends.

        Includes a change made at the previous advance time (a `plan` or `reset` at the
        same millisecond), so nothing is missed however calls interleave.
        """
        candidates = [self.state_at(self._cursor_ms)] + self.changes(self._cursor_ms, now_ms)
        out: list[CharacterState] = []
        for state in candidates:
            if state != self._last_reported:
                out.append(state)
                self._last_reported = state
        self._cursor_ms = max(self._cursor_ms, now_ms)
        return out

    # ------------------------------------------------------------------ internals
    def _rest_pose(self, t: int) -> Pose:
        """The pose at `t` ignoring any action that starts at `t` (what the next one starts from)."""
        pose = self._anchor.pose
        for seg in self._segments:
            if seg.end_ms <= t:
                pose = seg.pose_after
            elif seg.start_ms < t:
                pose = seg.pose_during
        return pose

    def _fields(self, t: int) -> tuple[Pose, str, str, Activity, bool]:
        pose, action, activity = self._anchor.pose, _IDLE, Activity.IDLE
        for seg in self._segments:
            if seg.start_ms <= t < seg.end_ms:
                pose, action = seg.pose_during, seg.action
                activity = Activity.TRANSITIONING if seg.transition else Activity.ACTING
                break
            if seg.end_ms <= t:
                pose = seg.pose_after
        expression, newest = _NEUTRAL, None
        for face in self._faces:
            if face.start_ms <= t < face.end_ms and (newest is None or face.start_ms >= newest):
                expression, newest = face.expression, face.start_ms
        speaking = self._anchor.speaking
        for time, value in self._speaking:
            if time <= t:
                speaking = value
        return pose, action, expression, activity, speaking

    def _timeline(self, until_ms: int) -> list[tuple[int, CharacterState]]:
        """(time, state) at each change after the anchor and by `until_ms`."""
        times = {seg.start_ms for seg in self._segments} | {seg.end_ms for seg in self._segments}
        times |= {face.start_ms for face in self._faces} | {face.end_ms for face in self._faces}
        times |= {time for time, _ in self._speaking}
        current = self._anchor
        out: list[tuple[int, CharacterState]] = []
        for time in sorted(t for t in times if self._anchor_ms <= t <= until_ms):
            pose, action, expression, activity, speaking = self._fields(time)
            if (pose, action, expression, activity, speaking) != (
                current.pose,
                current.action,
                current.expression,
                current.activity,
                current.speaking,
            ):
                current = CharacterState(
                    pose=pose,
                    action=action,
                    expression=expression,
                    activity=activity,
                    speaking=speaking,
                    since_ms=time,
                )
                out.append((time, current))
        return out

    def _prune(self, t: int) -> None:
        """Forget everything finished by `t` (the anchor becomes the state at `t`)."""
        if t <= self._anchor_ms:
            return
        self._anchor = self.state_at(t)
        self._anchor_ms = t
        self._segments = [seg for seg in self._segments if seg.end_ms > t]
        self._faces = [face for face in self._faces if face.end_ms > t]
        keep = [(time, value) for time, value in self._speaking if time > t]
        self._speaking = keep


def _shorten(seg: _Segment, end_ms: int) -> _Segment:
    return _Segment(seg.start_ms, end_ms, seg.action, seg.pose_during, seg.pose_after, seg.transition)
