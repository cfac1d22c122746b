"""Checks every renderer backend must pass, written once for the tests of each (importable
because pytest's `pythonpath` holds tests/)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest


class _Cancel(Exception):
    """What the frame callback raises, as ComfyUI's Cancel interrupts a node between frames."""


def assert_a_cancelled_chunk_is_rendered_again_whole(make: Callable[[], object], cancel_at: int) -> None:
    """`make()` gives a started renderer; two of them, fed alike, must agree after one is
    cancelled at frame `cancel_at` of its second chunk and restored from the checkpoint taken
    before it: the next chunk is the frames an uncancelled run shows (no gap, no repeat)."""
    straight = make()
    expected = [straight.next_chunk() for _ in range(2)]
    cancelled = make()
    first = cancelled.next_chunk()
    state = cancelled.checkpoint()

    def cancel(k: int) -> None:
        if k == cancel_at:
            raise _Cancel

    with pytest.raises(_Cancel):
        cancelled.next_chunk(on_frame=cancel)
    cancelled.restore(state)
    again = cancelled.next_chunk()
    assert np.array_equal(first.frames, expected[0].frames)
    assert again.first_index == expected[1].first_index and again.pts_ms == expected[1].pts_ms
    assert np.array_equal(again.frames, expected[1].frames)
