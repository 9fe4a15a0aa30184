"""The exact vector index: the true nearest chunks, filters applied before the top k."""

import numpy as np
import pytest

from kittyai.rag.index import ExactIndex

DIM = 32


def unit_vectors(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def brute_force(
    ids: np.ndarray, vectors: np.ndarray, query: np.ndarray, k: int
) -> tuple[list[int], np.ndarray]:
    scores = vectors @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return ids[order].tolist(), scores[order]


@pytest.fixture
def filled() -> tuple[ExactIndex, np.ndarray, np.ndarray]:
    # Chunk ids as SQLite gives them: increasing, with gaps where documents were replaced.
    ids = np.arange(10, 10 + 3 * 3000, 3, dtype=np.int64)
    vectors = unit_vectors(len(ids), seed=1)
    index = ExactIndex(DIM)
    for start in range(0, len(ids), 700):
        index.add(ids[start : start + 700], vectors[start : start + 700])
    return index, ids, vectors


def test_search_returns_the_true_nearest_first(
    filled: tuple[ExactIndex, np.ndarray, np.ndarray],
) -> None:
    index, ids, vectors = filled
    for query in unit_vectors(5, seed=2):
        found, scores = index.search(query, 20)

        expected, expected_scores = brute_force(ids, vectors, query, 20)
        assert found.tolist() == expected
        np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)
    assert len(index) == 3000


def test_a_stored_vector_finds_itself(filled: tuple[ExactIndex, np.ndarray, np.ndarray]) -> None:
    index, ids, vectors = filled

    found, scores = index.search(vectors[1234], 1)

    assert found.tolist() == [ids[1234]]
    assert scores[0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("share", [0.01, 0.1, 0.5, 0.9], ids=lambda share: f"{share:.0%} allowed")
def test_filtered_search_is_exact_over_the_allowed_ids(
    filled: tuple[ExactIndex, np.ndarray, np.ndarray], share: float
) -> None:
    index, ids, vectors = filled
    rng = np.random.default_rng(3)
    chosen = rng.random(len(ids)) < share
    query = unit_vectors(1, seed=4)[0]

    found, _ = index.search(query, 10, ids[chosen])

    # Filtering happens before the top 10 are picked: 10 allowed hits, the best of them.
    expected, _ = brute_force(ids[chosen], vectors[chosen], query, 10)
    assert found.tolist() == expected


def test_filter_as_a_mask_over_ids(filled: tuple[ExactIndex, np.ndarray, np.ndarray]) -> None:
    index, ids, vectors = filled
    # Allowed: ids divisible by 4; the mask ends before the largest ids, which are out.
    mask = np.zeros(int(ids.max()) - 100, dtype=np.bool_)
    mask[::4] = True
    allowed = (ids % 4 == 0) & (ids < len(mask))
    query = unit_vectors(1, seed=5)[0]

    found, _ = index.search(query, 25, mask)

    expected, _ = brute_force(ids[allowed], vectors[allowed], query, 25)
    assert found.tolist() == expected


def test_fewer_allowed_than_k_returns_just_those(
    filled: tuple[ExactIndex, np.ndarray, np.ndarray],
) -> None:
    index, ids, _ = filled

    found, scores = index.search(unit_vectors(1, seed=6)[0], 50, ids[[3, 99, 2500]])

    assert sorted(found.tolist()) == sorted(ids[[3, 99, 2500]].tolist())
    assert list(scores) == sorted(scores, reverse=True)
    assert index.search(unit_vectors(1, seed=6)[0], 5, np.array([7], dtype=np.int64))[0].size == 0


def test_removed_vectors_are_never_found_and_the_rest_still_are(
    filled: tuple[ExactIndex, np.ndarray, np.ndarray],
) -> None:
    index, ids, vectors = filled
    removed = np.concatenate([ids[:50], ids[1000:1400], ids[-30:]])

    # Unknown ids are ignored.
    index.remove([*removed.tolist(), 5, 999_999])

    assert len(index) == 3000 - len(removed)
    kept = ~np.isin(ids, removed)
    for row in (60, 999, 1400, 2960, 2969):
        found, scores = index.search(vectors[row], 1)
        assert found.tolist() == [ids[row]]
        assert scores[0] == pytest.approx(1.0, abs=1e-5)
    for query in unit_vectors(3, seed=7):
        found, _ = index.search(query, 30)
        expected, _ = brute_force(ids[kept], vectors[kept], query, 30)
        assert found.tolist() == expected
    for row in (0, 49, 1000, 1399, 2999):
        assert index.search(vectors[row], 1)[0].tolist() != [ids[row]]


def test_emptied_and_refilled(filled: tuple[ExactIndex, np.ndarray, np.ndarray]) -> None:
    index, ids, vectors = filled

    index.remove(ids)
    assert len(index) == 0
    assert index.search(vectors[0], 5)[0].size == 0

    index.add(ids[:10], vectors[:10])
    assert index.search(vectors[3], 1)[0].tolist() == [ids[3]]
    assert len(index) == 10


def test_an_id_can_be_added_only_once(filled: tuple[ExactIndex, np.ndarray, np.ndarray]) -> None:
    index, ids, vectors = filled

    with pytest.raises(ValueError, match="new"):
        index.add([99_999, int(ids[5])], unit_vectors(2, seed=8))
    with pytest.raises(ValueError, match="new"):
        index.add([99_999, 99_999], unit_vectors(2, seed=8))

    # Nothing of a refused batch was added.
    assert len(index) == 3000
    assert index.search(vectors[5], 1)[0].tolist() == [ids[5]]


def test_vectors_of_another_length_are_refused() -> None:
    index = ExactIndex(DIM)

    with pytest.raises(ValueError, match=f"expected 2 vectors of {DIM}"):
        index.add([1, 2], np.ones((2, DIM + 1), dtype=np.float32))
    assert len(index) == 0


def test_empty_index_finds_nothing() -> None:
    index = ExactIndex(DIM)

    found, scores = index.search(unit_vectors(1, seed=9)[0], 10)

    assert found.size == 0
    assert scores.size == 0
