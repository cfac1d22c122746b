"""One chunk from noise to frames on the host, with the GPU kept busy (one session).

Only two things stand between a chunk and the viewer: its denoising passes and its decode.
The clean refresh pass prepares the cache for the *next* chunk, and a prompt switch's
re-cache only has to be done before the chunk that reads the window. So on a CUDA device:

1. main stream: the denoising passes → the chunk's clean latents;
2. a high-priority side stream decodes them as soon as they exist;
3. main stream, queued right behind 1: what the chunk owes (its refresh pass, or after a
   switch in "after" timing, the re-cache, which rewrites this chunk too);
4. the host waits for 2 alone and copies the frames out.

2 and 3 run side by side, and the host never waits for 3. The first chunk after a prompt switch
is the one a directive waits for: it is decoded first and 3 is queued behind the decode,
because work beside the decode slows it. On CPU there is nothing to overlap: 3 is left for the
start of the next call (the frames come one pass sooner), with the same numbers.

Re-cache timing ("before"/"after") and semantics ("stock"/"causal") are `stream.py`'s.
The measured figures for each are in benchmarks/results/longlive-*.json.
"""

from __future__ import annotations

import functools

import torch

from .sampler import StreamingSampler
from .stream import RecacheTiming, checked_recache_timing

__all__ = ["ChunkPipeline", "RecacheTiming", "checked_recache_timing"]


class ChunkPipeline:
    """Sampler + streaming decoder: `next_frames()` gives uint8 (T, H, W, 3) frames on the CPU."""

    def __init__(self, sampler: StreamingSampler, decoder, *, recache: RecacheTiming = "after",
                 overlap: bool = True) -> None:
        """`decoder`: a decode stream (`video.decoders.streaming.open_stream`).
        `overlap`: decode on a side stream beside the refresh pass (CUDA only)."""
        self.sampler = sampler
        self.decoder = decoder
        self.set_recache_timing(recache)
        device = sampler.device
        self.side = _decode_stream(device) if overlap and device.type == "cuda" else None
        self._switched = False  # the next chunk is the first under a new prompt

    def set_prompt(self, context: torch.Tensor) -> None:
        """Switch the text conditioning; the window is re-cached before or after the next chunk."""
        self._switched = True
        self.sampler._s().set_prompt(context, timing=self.recache)

    def next_frames(self) -> torch.Tensor:
        """The next chunk's frames, uint8 (T, H, W, 3) on the CPU (batch 1)."""
        switched, self._switched = self._switched, False
        latents = self.sampler.next_chunk(defer_refresh=True)
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
                # The chunk a directive waits for: work beside the decode slows it, so the host
                # waits for the decode first.
                frames = frames.cpu()
        self.sampler.flush()  # queued on the main stream: nobody waits for it
        if switched:
            return frames
        with torch.cuda.stream(self.side):
            return frames.cpu()  # synchronises the side stream only

    def set_recache_timing(self, recache: RecacheTiming) -> None:
        """Change when switches re-cache, between chunks (a re-cache owed is still run)."""
        self.recache = checked_recache_timing(recache)
        self.sampler._s().timing = self.recache


@functools.cache
def _decode_stream(device: torch.device) -> torch.cuda.Stream:
    """One high-priority stream per GPU for every pipeline on it: the allocator keeps freed
    blocks per stream, so a stream per session would hold its decode memory after it ends.
    High priority: the decode's blocks go first whenever both streams have work."""
    return torch.cuda.Stream(device=device, priority=-1)
