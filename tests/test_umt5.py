"""UMT5 text encoder: Wan → transformers converter, strict loading, Wan's padding, the cache."""

from __future__ import annotations

import json
import math

import pytest
import torch

from comfyui_persona.errors import ModelFileMissingError
from comfyui_persona.video.decoders.checkpoint import CheckpointLayoutError
from comfyui_persona.video.text.umt5 import (
    UMT5Config,
    UMT5TextEncoder,
    build_tiny_tokenizer,
    build_umt5,
    clean_prompt,
    load_tokenizer,
    load_umt5,
    tiny_text_encoder,
    wan_to_hf_umt5,
)
from paths import CHECKPOINT_MANIFESTS

MANIFEST = json.loads((CHECKPOINT_MANIFESTS / "umt5_xxl_encoder_wan.json").read_text())
CORPUS = ["a person waving one hand in greeting", "smiling warmly", "standing relaxed breathing calmly"] * 3


def _wan_layout_state_dict(cfg: UMT5Config, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in Wan's `T5Encoder` key layout (the released file's)."""
    gen = torch.Generator().manual_seed(seed)
    sd = {"token_embedding.weight": torch.randn(cfg.vocab_size, cfg.dim, generator=gen)}
    for i in range(cfg.num_layers):
        p = f"blocks.{i}."
        d, f = cfg.dim, cfg.dim_ffn
        for name, shape in [
            ("norm1.weight", (d,)), ("attn.q.weight", (d, d)), ("attn.k.weight", (d, d)),
            ("attn.v.weight", (d, d)), ("attn.o.weight", (d, d)), ("norm2.weight", (d,)),
            ("ffn.gate.0.weight", (f, d)), ("ffn.fc1.weight", (f, d)), ("ffn.fc2.weight", (d, f)),
            ("pos_embedding.embedding.weight", (cfg.num_buckets, cfg.num_heads)),
        ]:  # fmt: skip
            scale = 1.0 if len(shape) == 1 else shape[-1] ** -0.5
            sd[p + name] = (
                1.0 + 0.1 * torch.randn(shape, generator=gen)
                if len(shape) == 1
                else torch.randn(shape, generator=gen) * scale
            )
    sd["norm.weight"] = 1.0 + 0.1 * torch.randn(cfg.dim, generator=gen)
    return sd


def _reference_wan_t5(
    sd: dict[str, torch.Tensor], cfg: UMT5Config, ids: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Wan's T5Encoder forward, written out from its definition (float32, no dropout)."""

    def norm(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))

    def bucket(rel):
        half = cfg.num_buckets // 2
        out = (rel > 0).long() * half
        rel = rel.abs()
        exact = half // 2
        large = (
            exact
            + (torch.log(rel.float() / exact) / math.log(cfg.max_distance / exact) * (half - exact)).long()
        )
        return out + torch.where(rel < exact, rel, large.clamp(max=half - 1))

    n = ids.shape[1]
    h, c = cfg.num_heads, cfg.dim // cfg.num_heads
    x = sd["token_embedding.weight"][ids]
    rel = torch.arange(n)[None, :] - torch.arange(n)[:, None]
    for i in range(cfg.num_layers):
        p = f"blocks.{i}."
        bias = sd[p + "pos_embedding.embedding.weight"][bucket(rel)].permute(2, 0, 1)[None]
        bias = bias.masked_fill(mask[:, None, None, :] == 0, torch.finfo(x.dtype).min)
        y = norm(x, sd[p + "norm1.weight"])
        q, k, v = (torch.nn.functional.linear(y, sd[p + f"attn.{t}.weight"]).view(1, n, h, c) for t in "qkv")
        att = torch.softmax(torch.einsum("binc,bjnc->bnij", q, k) + bias, dim=-1)
        x = x + torch.nn.functional.linear(
            torch.einsum("bnij,bjnc->binc", att, v).reshape(1, n, -1), sd[p + "attn.o.weight"]
        )
        y = norm(x, sd[p + "norm2.weight"])
        gate = torch.nn.functional.gelu(
            torch.nn.functional.linear(y, sd[p + "ffn.gate.0.weight"]), approximate="tanh"
        )
        x = x + torch.nn.functional.linear(
            torch.nn.functional.linear(y, sd[p + "ffn.fc1.weight"]) * gate, sd[p + "ffn.fc2.weight"]
        )
    return norm(x, sd["norm.weight"])


def test_converted_wan_keys_equal_the_transformers_model_at_real_size():
    released = {k: torch.empty(v["shape"], device="meta") for k, v in MANIFEST["tensors"].items()}
    converted = wan_to_hf_umt5(released)
    from comfyui_persona.video.text.umt5 import _meta_model

    model = _meta_model(UMT5Config.from_name("umt5-xxl"))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    assert MANIFEST["config"]["seq_len"] == UMT5Config().text_len


def test_converter_rejects_keys_it_does_not_know():
    with pytest.raises(CheckpointLayoutError, match="blocks.0.attn.bias"):
        wan_to_hf_umt5({"blocks.0.attn.bias": torch.zeros(1)})


def test_wan_layout_file_loads_and_computes_wans_encoder(tmp_path):
    cfg = UMT5Config.from_name("tiny")
    sd = _wan_layout_state_dict(cfg)
    torch.save(sd, tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")
    model = load_umt5(tmp_path / "models_t5_umt5-xxl-enc-bf16.pth", dtype=torch.float32, config=cfg)
    ids = torch.tensor([[5, 17, 3, 99, 1, 0, 0, 0]])
    mask = (torch.arange(8) < 5).long()[None]
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask).last_hidden_state
    expected = _reference_wan_t5(sd, cfg, ids, mask)
    torch.testing.assert_close(ours[:, :5], expected[:, :5], rtol=1e-4, atol=1e-4)


def test_transformers_layout_file_loads_directly(tmp_path):
    cfg = UMT5Config.from_name("tiny")
    hf_sd = wan_to_hf_umt5(_wan_layout_state_dict(cfg, seed=1))
    del hf_sd["encoder.embed_tokens.weight"]  # exported files often keep only the shared copy
    torch.save(hf_sd, tmp_path / "umt5.pth")
    model = load_umt5(tmp_path / "umt5.pth", dtype=torch.float32, config=cfg)
    assert torch.equal(model.encoder.embed_tokens.weight, hf_sd["shared.weight"])


def test_strict_load_names_a_missing_block(tmp_path):
    cfg = UMT5Config.from_name("tiny")
    sd = _wan_layout_state_dict(cfg)
    del sd["blocks.1.ffn.fc2.weight"]
    torch.save(sd, tmp_path / "t5.pth")
    with pytest.raises(CheckpointLayoutError, match="encoder.block.1.layer.1.DenseReluDense.wo.weight"):
        load_umt5(tmp_path / "t5.pth", config=cfg)


def test_embeddings_are_padded_to_512_and_zero_past_the_prompt():
    enc = tiny_text_encoder()
    prompt = "a person waving one hand in greeting, smiling warmly"
    emb = enc.encode(prompt)
    n = enc.token_count(prompt)
    assert emb.shape == (1, 512, 32)
    assert 2 < n < 512
    assert (emb[0, :n].norm(dim=-1) > 0).all()
    assert torch.count_nonzero(emb[0, n:]) == 0


def test_long_prompts_are_truncated_keeping_the_end_token():
    enc = tiny_text_encoder(text_len=16)
    ids, mask = enc.tokenizer(["smiling warmly " * 40], 16)
    assert mask.sum() == 16 and ids[0, -1] == enc.tokenizer.eos_id


def test_cache_hits_on_the_same_prompt_and_evicts_the_oldest():
    enc = tiny_text_encoder()
    enc.cache.max_entries = 2
    first = enc.encode("smiling warmly")
    again = enc.encode("  smiling   warmly ")  # same after Wan's whitespace cleaning
    assert again is first
    enc.encode("waving one hand in greeting")
    enc.encode("standing relaxed")
    assert enc.cache.stats() == {"entries": 2, "hits": 1, "misses": 3}
    assert "smiling warmly" not in enc.cache


def test_batch_and_cached_encodings_agree():
    enc = tiny_text_encoder()
    prompts = ["smiling warmly", "a person waving one hand in greeting"]
    batch, lengths = enc.encode_batch(prompts)
    for row, prompt in enumerate(prompts):
        torch.testing.assert_close(enc.encode(prompt)[0], batch[row], rtol=1e-5, atol=1e-5)
    assert lengths.tolist() == [enc.token_count(p) for p in prompts]


def test_tokenizer_file_round_trip(tmp_path):
    tok = build_tiny_tokenizer(CORPUS, vocab_size=128)
    tok.tokenizer.save(str(tmp_path / "tokenizer.json"))
    loaded = load_tokenizer(tmp_path)
    ids_a, mask_a = tok(["smiling warmly"], 8)
    ids_b, mask_b = loaded(["smiling warmly"], 8)
    assert torch.equal(ids_a, ids_b) and torch.equal(mask_a, mask_b)
    with pytest.raises(ModelFileMissingError, match="missing model file nothing-here"):
        load_tokenizer(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileMissingError, match="tokenizer.json .*looked for .*tokenizer.json, .*spiece.model"):
        load_tokenizer(tmp_path / "empty")


def test_prompt_cleaning_is_wans_whitespace_cleaning():
    assert clean_prompt("  a &amp;  b\n\tc ") == "a & b c"


def test_random_builder_gives_a_working_encoder():
    model = build_umt5("cpu", torch.float32, "tiny", seed=3)
    enc = UMT5TextEncoder(model, build_tiny_tokenizer(CORPUS, 512), text_len=8)
    assert enc.encode("smiling warmly").shape == (1, 8, 32)


def test_models_check_reads_layout_without_weights(tmp_path):
    from safetensors.torch import save_file

    from comfyui_persona.video.text.umt5 import check_tokenizer_file, check_umt5_file

    tiny = wan_to_hf_umt5(_wan_layout_state_dict(UMT5Config.from_name("tiny")))
    save_file(
        {k: v.contiguous() for k, v in tiny.items() if k != "encoder.embed_tokens.weight"},
        str(tmp_path / "t5.safetensors"),
    )
    (problem,) = check_umt5_file(tmp_path / "t5.safetensors", "umt5-xxl")  # against the released size
    assert "missing" in problem and "wrong shape" in problem
    build_tiny_tokenizer(CORPUS, 128).tokenizer.save(str(tmp_path / "tokenizer.json"))
    assert check_tokenizer_file(tmp_path / "tokenizer.json") == []
    (tmp_path / "broken.json").write_text("{}")
    assert check_tokenizer_file(tmp_path / "broken.json")


def test_sentencepiece_model_tokenizes_like_sentencepiece(tmp_path):
    """The spiece.model path must give sentencepiece's own ids, not a run of <unk>."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20),
        model_prefix=str(tmp_path / "spiece"),
        vocab_size=30,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    tok = load_tokenizer(tmp_path / "spiece.model")
    expected = spm.SentencePieceProcessor(model_file=str(tmp_path / "spiece.model")).encode("smiling warmly")
    ids, mask = tok(["smiling warmly"], 16)
    n = len(expected) + 1
    assert ids[0, :n].tolist() == [*expected, 1] and mask.sum() == n
    assert ids[0, n:].eq(0).all()


def test_tiny_text_encoder_is_reproducible():
    """Same seed, same vocabulary and same embeddings, every time (the vocabulary is built,
    not trained: WordPiece training in `tokenizers` gave 335 or 336 pieces run to run)."""
    vocabs = {tuple(sorted(build_tiny_tokenizer(CORPUS, 512).tokenizer.get_vocab().items())) for _ in range(5)}
    assert len(vocabs) == 1
    a, b = tiny_text_encoder(seed=0), tiny_text_encoder(seed=0)
    prompt = "a person waving one hand in greeting, smiling warmly"
    assert a.tokenizer.tokenizer.get_vocab() == b.tokenizer.tokenizer.get_vocab()
    assert torch.equal(a.encode(prompt), b.encode(prompt))
    assert not torch.equal(a.encode(prompt), tiny_text_encoder(seed=1).encode(prompt))
    ids, _ = a.tokenizer([prompt], 32)
    assert 2 not in ids[0].tolist()  # no <unk>: every word of the corpus is a piece or spelled out
