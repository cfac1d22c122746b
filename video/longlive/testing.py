"""Write a complete tiny random model set in the real file formats: a smoke test of an install.

`write_tiny_models(models_dir)` puts every file the LongLive engine loads into `models_dir`,
under the names and in the layouts of the released files (tests/fixtures/checkpoints/):

- `longlive/longlive_base.pt`: {"generator": {"model.<key>": tensor}} — the `tiny-engine`
  DiT preset (2 layers, dim 32, 16 latent channels, text_dim 32);
- `longlive/lora.pt`: {"generator_lora": PEFT keys}, rank 256 as released (small B, so the
  merge changes the weights without swamping them);
- `models_t5_umt5-xxl-enc-bf16.pth`: a 2-layer d_model-32 UMT5 in Wan's `T5Encoder` layout,
  bfloat16 like the released file;
- `umt5-xxl/tokenizer.json`: a 512-piece WordPiece tokenizer trained with the `tokenizers`
  library on the core vocabulary's phrases, with T5's `<pad>` (0) and `</s>` (1);
- `taew2_1.pth`: TAEW2.1's structure at widths 8–16;
- `Wan2.1_VAE.pth`: the Wan 2.1 VAE's structure at base width 8.

Every loader reads its sizes from these files (config detection), so `LongLiveBackend()`
with `PERSONA_MODELS_DIR` pointing here builds the whole engine through the same code path
as the real weights, and `persona models check --dir` reports every file OK. Random weights
make noise-like video: the point is that loading, streaming, decoding and the nodes work,
in seconds on a CPU. Used by the tests (engine, ComfyUI workflows) and by users:

    python -c "from comfyui_persona.video.longlive.testing import write_tiny_models as w; w('/tmp/tiny')"
    PERSONA_MODELS_DIR=/tmp/tiny persona models check
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["TINY_PRESET", "tiny_corpus", "tiny_dit", "write_tiny_models"]

#: The DiT preset the tiny set uses (video/longlive/config.py).
TINY_PRESET = "tiny-engine"


def tiny_corpus() -> list[str]:
    """Phrases the tiny tokenizer learns: the core vocabulary's, the speaking cue, the scene."""
    from ...persona.schema import core_vocabulary
    from ..text.prompt import DEFAULT_APPEARANCE, DEFAULT_SCENE, SPEAKING_CUE

    vocab = core_vocabulary()
    return [e.phrase for e in (*vocab.actions, *vocab.expressions)] + [
        SPEAKING_CUE, DEFAULT_SCENE, DEFAULT_APPEARANCE,
        "a woman a man with short long red brown black blond hair blue green eyes wearing top",
        "slightly energetically very",
    ]


def tiny_dit(seed: int = 0, preset: str = "tiny", std: float = 0.2, **changes):
    """A random `CausalWanModel` of a tiny preset (float32, CPU, eval), e.g. for tests:
    `tiny_dit(num_layers=1, local_attn_size=9)`. Deterministic per `seed`."""
    from .config import WanConfig
    from .model import CausalWanModel, init_random_

    cfg = WanConfig.from_name(preset).replace(**changes)
    with torch.random.fork_rng(devices=[]):  # the caller's global RNG stays untouched
        torch.manual_seed(seed)
        return init_random_(CausalWanModel(cfg), seed=seed, std=std).eval()


def _files(directory: Path) -> dict[str, Path]:
    from .. import model_files

    return {key: directory / model_files.FILES[key].filename for key in (
        "longlive.generator", "longlive.lora", "umt5.encoder", "umt5.tokenizer", "taew2.1", "wan2.1.vae")}


@torch.no_grad()
def write_tiny_models(models_dir: str | os.PathLike, seed: int = 0) -> dict[str, Path]:
    """Write the tiny set into `models_dir` (created if needed); returns {model file key: path}.

    Deterministic per `seed`. Existing files of the same names are overwritten. Takes about
    a second and writes about 3 MB.
    """
    from ..decoders.taehv import build_taehv
    from ..decoders.wan_vae import build_wan_vae
    from ..text.umt5 import UMT5Config, build_tiny_tokenizer, build_umt5, hf_to_wan_umt5
    from .checkpoint import add_wrapper_prefix
    from .config import WanConfig
    from .lora import PEFT_PREFIX, RANK, lora_targets
    from .model import CausalWanModel, init_random_

    paths = _files(Path(models_dir).expanduser())
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)

    cfg = WanConfig.from_name(TINY_PRESET)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # the caller's global RNG stays untouched
        torch.manual_seed(seed)
        model = init_random_(CausalWanModel(cfg), seed=seed, std=0.2).eval()
    torch.save({"generator": add_wrapper_prefix(model.state_dict()), "step": 0}, paths["longlive.generator"])

    weights = {name: module.weight for name, module in model.named_modules() if hasattr(module, "weight")}
    lora = {}
    for target in lora_targets(model):
        out_features, in_features = weights[target].shape
        lora[f"{PEFT_PREFIX}{target}.lora_A.weight"] = torch.randn(RANK, in_features, generator=gen) / in_features**0.5
        lora[f"{PEFT_PREFIX}{target}.lora_B.weight"] = 1e-3 * torch.randn(out_features, RANK, generator=gen)
    torch.save({"generator_lora": lora}, paths["longlive.lora"])

    umt5_cfg = UMT5Config.from_name("tiny")
    assert umt5_cfg.dim == cfg.text_dim, "the tiny DiT must read the tiny encoder's embeddings"
    encoder = build_umt5("cpu", torch.float32, umt5_cfg, seed)
    state = {k: v.to(torch.bfloat16).clone() for k, v in hf_to_wan_umt5(encoder.state_dict()).items()}
    torch.save(state, paths["umt5.encoder"])
    build_tiny_tokenizer(tiny_corpus(), umt5_cfg.vocab_size).tokenizer.save(str(paths["umt5.tokenizer"]))

    torch.save(build_taehv("cpu", torch.float32, "tiny", seed).state_dict(), paths["taew2.1"])
    torch.save(build_wan_vae("cpu", torch.float32, "tiny", seed).state_dict(), paths["wan2.1.vae"])
    return paths
