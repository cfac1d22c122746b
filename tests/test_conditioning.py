"""Conditioning blender: per-token slerp over chunks, padding-safe, interruptible."""

from __future__ import annotations

import pytest
import torch

from comfyui_persona.video.transitions.conditioning import ConditioningBlender, slerp_tokens


def _embedding(seed: int, length: int, total: int = 16, dim: int = 8) -> torch.Tensor:
    """A prompt embedding as Wan makes it: `length` real tokens, zeros after."""
    e = torch.randn(1, total, dim, generator=torch.Generator().manual_seed(seed)) * 3
    e[:, length:] = 0
    return e


def _angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    return torch.acos(cos.clamp(-1, 1))


def test_slerp_endpoints_are_exact():
    a, b = _embedding(0, 10), _embedding(1, 10)
    assert torch.equal(slerp_tokens(a, b, 0.0), a)
    assert torch.equal(slerp_tokens(a, b, 1.0), b)


def test_midpoint_is_on_the_great_circle_with_the_mean_norm():
    a, b = _embedding(0, 10), _embedding(1, 10)
    mid = slerp_tokens(a, b, 0.5)[:, :10]
    torch.testing.assert_close(_angle(mid, a[:, :10]), _angle(mid, b[:, :10]), atol=1e-4, rtol=0)
    torch.testing.assert_close(_angle(mid, a[:, :10]) * 2, _angle(a[:, :10], b[:, :10]), atol=1e-4, rtol=0)
    torch.testing.assert_close(mid.norm(dim=-1), (a[:, :10].norm(dim=-1) + b[:, :10].norm(dim=-1)) / 2)
    # A plain lerp would shrink these tokens; slerp keeps them at least the smaller norm.
    assert (mid.norm(dim=-1) >= torch.minimum(a[:, :10].norm(dim=-1), b[:, :10].norm(dim=-1)) - 1e-5).all()


def test_padding_stays_zero_and_tokens_present_on_one_side_fade():
    a, b = _embedding(0, 5), _embedding(1, 9)
    out = slerp_tokens(a, b, 0.25)
    assert torch.isfinite(out).all()
    assert torch.count_nonzero(out[:, 9:]) == 0
    torch.testing.assert_close(out[:, 5:9], 0.25 * b[:, 5:9])


def test_identical_and_opposite_tokens_do_not_produce_nan():
    a = _embedding(0, 16)
    assert torch.isfinite(slerp_tokens(a, a, 0.3)).all()
    torch.testing.assert_close(slerp_tokens(a, a, 0.3), a)
    assert torch.isfinite(slerp_tokens(a, -a, 0.5)).all()


def test_bfloat16_embeddings_keep_their_dtype():
    a, b = _embedding(0, 10).bfloat16(), _embedding(1, 10).bfloat16()
    assert slerp_tokens(a, b, 0.5).dtype == torch.bfloat16


def test_blender_reaches_the_target_after_n_chunks_with_one_change_per_chunk():
    a, b = _embedding(0, 10), _embedding(1, 12)
    blender = ConditioningBlender(a, steps=4)
    assert blender.step() == (a, False)
    blender.set_target(b)
    seen = []
    for _ in range(4):
        emb, changed = blender.step()
        assert changed
        seen.append(emb)
    assert torch.equal(seen[-1], b) and not blender.blending
    assert blender.step()[1] is False
    # Each chunk moves the real tokens closer to the target.
    angles = [_angle(e[:, :10], b[:, :10]).mean().item() for e in [a, *seen]]
    assert all(x > y for x, y in zip(angles[:-1], angles[1:], strict=True))


def test_new_target_mid_blend_starts_from_the_current_embedding():
    a, b, c = _embedding(0, 10), _embedding(1, 10), _embedding(2, 10)
    blender = ConditioningBlender(a, steps=4, easing="linear")
    blender.set_target(b)
    blender.step()
    current, _ = blender.step()  # halfway to b
    blender.set_target(c)
    first, changed = blender.step()
    assert changed
    torch.testing.assert_close(first, slerp_tokens(current, c, 0.25))
    # No jump: the first step after the interruption is a quarter of the way, not a switch.
    assert (first - current).norm() < (c - current).norm()
    for _ in range(3):
        last, _ = blender.step()
    assert torch.equal(last, c)


def test_zero_steps_switches_on_the_next_chunk():
    a, b = _embedding(0, 10), _embedding(1, 10)
    blender = ConditioningBlender(a, steps=4)
    blender.set_target(b, steps=0)
    assert torch.equal(blender.step()[0], b)


def test_bad_arguments_are_named():
    a = _embedding(0, 10)
    with pytest.raises(KeyError, match="smoothstep"):
        ConditioningBlender(a, easing="bouncy")
    with pytest.raises(ValueError, match="shape"):
        ConditioningBlender(a).set_target(torch.zeros(1, 4, 8))
