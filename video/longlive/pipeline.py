"""One chunk from noise to frames on the host, with the GPU kept busy.

Only two things stand between a chunk and the viewer: its denoising passes and its decode.
The clean refresh pass prepares the cache for the *next* chunk, and a prompt switch's
re-cache only has to be done before the chunk that reads the window. So on a CUDA device:

1. main stream: the denoising passes → the chunk's clean latents;
2. a high-priority side stream decodes them as soon as they exist;
3. main stream, queued right behind 1: the chunk's refresh pass (or, after a switch in
   `recache="after"` mode, the re-cache, which rewrites this chunk too);
4. the host waits for 2 alone and copies the frames out.

2 and 3 run side by side instead of one after the other, and the host never waits for 3:
at real-time pacing the generator is idle between chunks and 3 fills that time. The first
chunk after a prompt switch is the one a directive waits for: it is decoded first and 3 is
queued behind the decode, because work beside the decode slows it (a re-cache beside it
cost ~100 ms on an H100). On CPU there is nothing to overlap: 3 is left for the start of the
next call (the frames come one pass sooner), with the same numbers as on the GPU.

Prompt switches (`set_prompt`): "before" (LongLive's order) re-caches the window under the new
prompt before the next chunk, so a directive waits for the re-cache (about 2.8 passes at
480×832) and then the 4 denoising passes. "after" denoises the first chunk under the new
prompt over the window as the old prompt left it (cross-attention already reads the new
text), and re-caches right after it, queued behind its decode: the change shows one re-cache sooner, and the
chunk after it reads a re-cached window as with "before". The price is a first changed chunk
that follows the new prompt less closely (LongLive's "no re-cache" behaviour for one chunk);
with the conditioning blender that chunk is a partial step toward the new prompt anyway.
"after" is the default: a directive is what the viewer waits for (480×832 on an H100:
284 ms from a switch to the changed frames on the host, 397 ms with "before";
benchmarks/results/longlive-h100-2026-11-25-final.json). How much less closely that first
chunk follows its prompt needs the released weights to judge; none are here.
"""

from __future__ import annotations

import functools
from typing import Literal

import torch

from .sampler import StreamingSampler

__all__ = ["ChunkPipeline", "RecacheTiming", "checked_recache_timing"]

RecacheTiming = Literal["before", "after"]


class ChunkPipeline:
    """Sampler + streaming decoder: `next_frames()` gives uint8 (T, H, W, 3) frames on the CPU."""

    def __init__(self, sampler: StreamingSampler, decoder, *, recache: RecacheTiming = "after",
                 overlap: bool = True) -> None:
        """`decoder`: a decode stream (`video.decoders.streaming.open_stream`).
        `overlap`: decode on a side stream beside the refresh pass (CUDA only)."""
        self.set_recache_timing(recache)
        self.sampler = sampler
        self.decoder = decoder
        device = sampler.device
        self.side = _decode_stream(device) if overlap and device.type == "cuda" else None
        self._recache_owed = False  # a switch in "after" mode whose re-cache has not run yet
        self._switched = False  # the next chunk is the first under a new prompt
        self._owed = False  # CPU: the last chunk's refresh / re-cache waits for the next call

    def set_prompt(self, context: torch.Tensor) -> None:
        """Switch the text conditioning; the window is re-cached before or after the next chunk."""
        self._switched = True
        if self.recache == "before":
            # Re-caches now. On CPU a pending refresh of the last chunk is skipped (the re-cache
            # rewrites it); on a GPU it was queued right after that chunk and has run.
            self.sampler.set_prompt(context)
            return
        self._settle()  # what the last chunk owes runs under the prompt it was made with
        self.sampler.set_prompt(context, recache=False)
        self._recache_owed = self.sampler.chunks_done > 0

    def next_frames(self) -> torch.Tensor:
        """The next chunk's frames, uint8 (T, H, W, 3) on the CPU (batch 1)."""
        self._settle()
        switched, self._switched = self._switched, False
        latents = self.sampler.next_chunk(defer_refresh=True)
        self._owed = True
        if self.side is None:
            return self.decoder.decode_uint8(latents)[0].cpu()  # what is owed waits for the next call
        # Always on the side stream: the decoder's carried state (TAE memory, VAE cache) then
        # lives on one stream, and the allocator never hands a block the decode still reads
        # to the main stream's work beside it.
        self.side.wait_stream(torch.cuda.current_stream(latents.device))
        with torch.cuda.stream(self.side):
            latents.record_stream(self.side)  # main may free it while the side stream reads
            frames = self.decoder.decode_uint8(latents)[0]
            if switched:
                # The chunk a directive waits for: work beside the decode slows it (a re-cache
                # beside it cost ~100 ms on an H100), so the host waits for the decode first.
                frames = frames.cpu()
        self._settle()  # queued on the main stream: nobody waits for it
        if switched:
            return frames
        with torch.cuda.stream(self.side):
            return frames.cpu()  # synchronises the side stream only

    def set_recache_timing(self, recache: RecacheTiming) -> None:
        """Change when switches re-cache, between chunks (a re-cache owed is still run)."""
        self.recache = checked_recache_timing(recache)

    def _settle(self) -> None:
        """Run (or, on a GPU, queue) the refresh pass or re-cache the last chunk owes."""
        if not self._owed:
            return
        self._owed = False
        if self._recache_owed:
            self._recache_owed = False
            self.sampler.recache()  # rewrites the pending chunk too: its own refresh is skipped
        else:
            self.sampler.flush()


def checked_recache_timing(recache: str) -> RecacheTiming:
    """`recache` if it is "before" or "after", else a ValueError naming it."""
    if recache not in ("before", "after"):
        raise ValueError(f"recache must be 'before' or 'after', got {recache!r}")
    return recache  # type: ignore[return-value]


@functools.cache
def _decode_stream(device: torch.device) -> torch.cuda.Stream:
    """One high-priority stream per GPU for every pipeline on it: the allocator keeps freed
    blocks per stream, so a stream per session would hold its decode memory after it ends.
    High priority: the decode's blocks go first whenever both streams have work."""
    return torch.cuda.Stream(device=device, priority=-1)
