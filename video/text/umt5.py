"""UMT5-XXL text encoder for Wan/LongLive prompts, through transformers' `UMT5EncoderModel`.

Wan ships the encoder as `models_t5_umt5-xxl-enc-bf16.pth` in its own `T5Encoder` layout
(tests/fixtures/checkpoints/umt5_xxl_encoder_wan.json); `wan_to_hf_umt5` is the one named
converter to the transformers layout. A state dict already in the transformers layout
(e.g. exported from google/umt5-xxl) loads as is.

The two implementations compute the same thing: pre-norm T5 blocks with RMS norms (eps 1e-6),
unscaled attention with a per-layer bidirectional relative-position bias (32 buckets, max
distance 128), and a gated tanh-GELU FFN where Wan's `gate.0` is transformers' `wi_0` and
`fc1` is `wi_1`.

As Wan does: prompts are whitespace-cleaned, tokenized with `</s>` appended, padded or
truncated to `text_len` = 512 tokens, and the embeddings past each prompt's length are set
to zero (the DiT's cross-attention sees the padded 512 tokens).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import ModelFileMissingError
from ..decoders.checkpoint import CheckpointLayoutError, ModelFamily, named_config
from .cache import LRUCache

__all__ = [
    "TextTokenizer",
    "UMT5Config",
    "UMT5_FAMILY",
    "UMT5TextEncoder",
    "build_tiny_tokenizer",
    "build_umt5",
    "check_tokenizer_file",
    "check_umt5_file",
    "clean_prompt",
    "detect_umt5_config",
    "hf_to_wan_umt5",
    "load_tokenizer",
    "load_umt5",
    "tiny_text_encoder",
    "wan_to_hf_umt5",
]


@dataclass(frozen=True)
class UMT5Config:
    vocab_size: int = 256384
    dim: int = 4096
    dim_ffn: int = 10240
    num_heads: int = 64
    num_layers: int = 24
    num_buckets: int = 32
    max_distance: int = 128
    text_len: int = 512

    @classmethod
    def from_name(cls, name: str) -> UMT5Config:
        return named_config("UMT5", _PRESETS, name)

    def hf_config(self):
        from transformers import UMT5Config as HFConfig

        return HFConfig(
            vocab_size=self.vocab_size,
            d_model=self.dim,
            d_kv=self.dim // self.num_heads,
            d_ff=self.dim_ffn,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            relative_attention_num_buckets=self.num_buckets,
            relative_attention_max_distance=self.max_distance,
            feed_forward_proj="gated-gelu",  # tanh GELU ("gelu_new"), as Wan's GELU
            layer_norm_epsilon=1e-6,
            dropout_rate=0.0,
            tie_word_embeddings=False,
            is_encoder_decoder=False,
            use_cache=False,
        )


_PRESETS = {
    "umt5-xxl": UMT5Config(),
    "tiny": UMT5Config(vocab_size=512, dim=32, dim_ffn=64, num_heads=4, num_layers=2),
}

# --- layout converter ---------------------------------------------------------------------

_BLOCK_RENAMES = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")


def wan_to_hf_umt5(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename Wan `T5Encoder` keys to transformers `UMT5EncoderModel` keys (no tensor copies).

    The token embedding is written under both `shared.weight` and
    `encoder.embed_tokens.weight` (the same tensor: transformers ties them).
    """
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in sd.items():
        if key == "token_embedding.weight":
            out["shared.weight"] = value
            out["encoder.embed_tokens.weight"] = value
        elif key == "norm.weight":
            out["encoder.final_layer_norm.weight"] = value
        elif (m := _BLOCK_KEY.match(key)) and m.group(2) in _BLOCK_RENAMES:
            out[f"encoder.block.{m.group(1)}.{_BLOCK_RENAMES[m.group(2)]}"] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointLayoutError(
            f"not a Wan T5Encoder key: {', '.join(unknown[:6])} ({len(unknown)} in all)"
        )
    return out


def hf_to_wan_umt5(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `wan_to_hf_umt5`: transformers keys → Wan `T5Encoder` keys (to write
    files in the layout Wan publishes, e.g. `testing.write_tiny_models`)."""
    inverse = {v: k for k, v in _BLOCK_RENAMES.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key == "shared.weight":
            out["token_embedding.weight"] = value
        elif key == "encoder.embed_tokens.weight":
            continue  # the same tensor as shared.weight
        elif key == "encoder.final_layer_norm.weight":
            out["norm.weight"] = value
        elif (m := re.match(r"^encoder\.block\.(\d+)\.(.+)$", key)) and m.group(2) in inverse:
            out[f"blocks.{m.group(1)}.{inverse[m.group(2)]}"] = value
        else:
            raise CheckpointLayoutError(f"not a transformers UMT5EncoderModel key: {key}")
    return out


def detect_umt5_config(shapes: dict[str, torch.Tensor]) -> UMT5Config:
    """Vocabulary, d_model, FFN width, layers and heads of an encoder, read from its shapes
    (Wan or transformers layout). Heads come from the relative-attention bias table
    ([buckets, heads]); `max_distance` is not in the weights and keeps UMT5's 128.
    """
    hf = _to_hf_layout(shapes)
    prefix = "encoder.block.0.layer."
    try:
        vocab, dim = hf["shared.weight"].shape
        ffn = hf[prefix + "1.DenseReluDense.wi_0.weight"].shape[0]
        buckets, heads = hf[prefix + "0.SelfAttention.relative_attention_bias.weight"].shape
    except KeyError as exc:
        raise CheckpointLayoutError(f"not a UMT5 encoder checkpoint: it has no {exc.args[0]!r}") from None
    layers = len({k.split(".")[2] for k in hf if k.startswith("encoder.block.")})
    return UMT5Config(
        vocab_size=int(vocab), dim=int(dim), dim_ffn=int(ffn), num_heads=int(heads),
        num_layers=layers, num_buckets=int(buckets),
    )


def _to_hf_layout(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if "token_embedding.weight" in sd:
        return wan_to_hf_umt5(sd)
    if "shared.weight" in sd and "encoder.embed_tokens.weight" not in sd:
        sd = {**sd, "encoder.embed_tokens.weight": sd["shared.weight"]}
    return sd


# --- building and loading -------------------------------------------------------------------


def _meta_model(cfg: UMT5Config):
    from transformers import UMT5EncoderModel

    with torch.device("meta"):
        return UMT5EncoderModel(cfg.hf_config())


def _tie(model) -> None:
    model.encoder.embed_tokens.weight = model.shared.weight


#: UMT5 encoders, Wan or transformers layout: sizes read from the shapes (checkpoint.py).
UMT5_FAMILY = ModelFamily(
    what="UMT5 encoder", presets=_PRESETS, detect=detect_umt5_config, build_meta=_meta_model,
    to_module_layout=_to_hf_layout, after=_tie,
)


def build_umt5(device="cpu", dtype=torch.bfloat16, config: str | UMT5Config = "umt5-xxl", seed: int = 0):
    """A random-weight `UMT5EncoderModel` built on meta, materialized on `device`."""
    return UMT5_FAMILY.build(device, dtype, config, seed)


def load_umt5(path, device="cpu", dtype=torch.bfloat16, config: str | UMT5Config | None = None):
    """Load the encoder strictly from the Wan layout or the transformers layout.

    `config` None: the sizes are read from the file (`detect_umt5_config`)."""
    return UMT5_FAMILY.load(path, device, dtype, config)


# --- tokenizer ------------------------------------------------------------------------------


def clean_prompt(text: str) -> str:
    """Wan's 'whitespace' cleaning: unescape HTML entities, collapse runs of whitespace.

    (Wan also runs ftfy to repair mojibake; we do not depend on ftfy.)
    """
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


class TextTokenizer:
    """Token ids and mask at a fixed length, `</s>` appended, `<pad>` (id 0) after."""

    def __init__(self, tokenizer, eos_id: int, pad_id: int = 0) -> None:
        self.tokenizer = tokenizer  # a `tokenizers.Tokenizer`
        self.eos_id = eos_id
        self.pad_id = pad_id

    def __call__(self, texts: list[str], text_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.full((len(texts), text_len), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(texts), text_len), dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = self.tokenizer.encode(clean_prompt(text), add_special_tokens=False).ids
            tokens = tokens[: text_len - 1] + [self.eos_id]
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        return ids, mask


def load_tokenizer(path: str | Path) -> TextTokenizer:
    """From `tokenizer.json`, a `spiece.model`, or a folder holding either."""
    from tokenizers import Tokenizer

    path = Path(path)
    source = "https://huggingface.co/Wan-AI/Wan2.1-T2V-1.3B (google/umt5-xxl/tokenizer.json)"
    if path.is_dir():
        for name in ("tokenizer.json", "spiece.model"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise ModelFileMissingError("tokenizer.json", purpose="UMT5 tokenizer (or spiece.model)", source=source,
                                        looked_in=[path / "tokenizer.json", path / "spiece.model"])
    if not path.is_file():
        raise ModelFileMissingError(path.name, purpose="UMT5 tokenizer", source=source, looked_in=[path])
    tok = _SentencePieceTokenizer(path) if path.suffix == ".model" else Tokenizer.from_file(str(path))
    eos = tok.token_to_id("</s>")
    pad = tok.token_to_id("<pad>")
    if eos is None or pad is None:
        raise CheckpointLayoutError(f"{path}: tokenizer has no '</s>' or '<pad>' token; not a T5/UMT5 tokenizer")
    return TextTokenizer(tok, eos_id=eos, pad_id=pad)


class _SentencePieceTokenizer:
    """`spiece.model` through sentencepiece itself, with the few `tokenizers` methods we use.

    (transformers 5's `T5TokenizerFast(vocab_file=...)` does not read the model's pieces, so
    going through it silently tokenizes everything as `<unk>`.)
    """

    def __init__(self, path: Path) -> None:
        import sentencepiece

        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(path))

    def encode(self, text: str, add_special_tokens: bool = False):
        from types import SimpleNamespace

        ids = self.sp.encode(text)
        return SimpleNamespace(ids=ids + [self.sp.eos_id()] if add_special_tokens else ids)

    def token_to_id(self, piece: str) -> int | None:
        pid = self.sp.piece_to_id(piece)
        return None if pid == self.sp.unk_id() and piece != self.sp.id_to_piece(pid) else pid

    def get_vocab_size(self) -> int:
        return self.sp.get_piece_size()


def build_tiny_tokenizer(corpus: list[str], vocab_size: int = 512) -> TextTokenizer:
    """A small word-piece tokenizer over `corpus`, with T5's special ids (pad 0, eos 1, unk 2).

    The vocabulary is built here, deterministically, not trained: `tokenizers`' WordPiece
    trainer merges pairs in an order that depends on hash-map iteration, so two trainings on
    one corpus gave vocabularies of 335 and 336 pieces and different ids (hence different
    embeddings from the same seeded encoder). Pieces, in id order: the specials, every
    character of the corpus and its `##` continuation (so any word of those characters
    tokenizes without `<unk>`), then whole words by frequency (ties alphabetical) while
    `vocab_size` allows.
    """
    from collections import Counter

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    normalizer = normalizers.Lowercase()
    splitter = pre_tokenizers.Whitespace()
    words: Counter[str] = Counter()
    for text in corpus:
        words.update(piece for piece, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for word in words for c in word})
    pieces = ["<pad>", "</s>", "<unk>", *chars, *(f"##{c}" for c in chars)]
    if len(pieces) > vocab_size:
        raise ValueError(f"vocab_size {vocab_size} cannot hold the corpus' {len(chars)} characters")
    known = set(pieces)
    for word, _ in sorted(words.items(), key=lambda item: (-item[1], item[0])):
        if len(pieces) >= vocab_size:
            break
        if word not in known:
            pieces.append(word)
            known.add(word)
    tok = Tokenizer(models.WordPiece({piece: i for i, piece in enumerate(pieces)}, unk_token="<unk>"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = splitter
    return TextTokenizer(tok, eos_id=tok.token_to_id("</s>"), pad_id=tok.token_to_id("<pad>"))


# --- the encoder the engine uses -------------------------------------------------------------


class UMT5TextEncoder:
    """Prompt → (1, text_len, dim) embedding, cached per distinct cleaned prompt."""

    def __init__(self, model, tokenizer: TextTokenizer, text_len: int = 512, cache_entries: int = 32) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.text_len = text_len
        self.cache: LRUCache = LRUCache(cache_entries)

    @property
    def dim(self) -> int:
        return self.model.config.d_model

    @torch.no_grad()
    def encode_batch(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Uncached: embeddings (B, text_len, dim), zero past each prompt, and lengths (B,)."""
        device = self.model.shared.weight.device
        ids, mask = self.tokenizer(prompts, self.text_len)
        ids, mask = ids.to(device), mask.to(device)
        out = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        out = out * mask.unsqueeze(-1).to(out.dtype)
        return out, mask.sum(dim=1)

    def encode(self, prompt: str) -> torch.Tensor:
        key = clean_prompt(prompt)
        return self.cache.get_or_compute(key, lambda: self.encode_batch([key])[0])

    def token_count(self, prompt: str) -> int:
        """Tokens the prompt uses including `</s>` (capped at text_len)."""
        _, mask = self.tokenizer([prompt], self.text_len)
        return int(mask.sum())


def tiny_text_encoder(seed: int = 0, text_len: int = 512, corpus: list[str] | None = None) -> UMT5TextEncoder:
    """A tiny random UMT5 (2 layers, dim 32) with a tokenizer trained on `corpus`, on CPU.

    The default corpus is the core vocabulary's phrases, so the composer's prompts tokenize
    to real pieces rather than `<unk>`. For end-to-end CPU tests of the engine.
    """
    if corpus is None:
        from ...persona.schema import core_vocabulary

        vocab = core_vocabulary()
        corpus = [e.phrase for e in (*vocab.actions, *vocab.expressions)] + [
            "a person slightly energetically speaking talking moving the mouth as if talking"
        ]
    cfg = UMT5Config.from_name("tiny")
    model = build_umt5("cpu", torch.float32, cfg, seed)
    return UMT5TextEncoder(model, build_tiny_tokenizer(corpus, cfg.vocab_size), text_len=text_len)


def check_umt5_file(path, config: str | UMT5Config | None = None) -> list[str]:
    """Layout problems of the encoder file, Wan or transformers layout (reads no weights)."""
    return UMT5_FAMILY.check_file(path, config)


def check_tokenizer_file(path) -> list[str]:
    """Problems loading the tokenizer, or a vocabulary that is not UMT5's size."""
    try:
        tok = load_tokenizer(path)
    except Exception as exc:  # tokenizers raises a plain Exception for a malformed file
        return [f"{type(exc).__name__}: {exc}"]
    size = tok.tokenizer.get_vocab_size()
    limit = UMT5Config.from_name("umt5-xxl").vocab_size
    return [] if size <= limit else [f"vocabulary of {size} pieces exceeds UMT5's {limit} embeddings"]
