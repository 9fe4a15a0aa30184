"""Nearest-neighbour search over chunk vectors, behind an interface an ANN index can take.

`ExactIndex` compares the query with every vector: one matrix-vector product over a
contiguous float32 matrix, 100k x 384 in a few milliseconds, exact by construction.
Past a few hundred thousand chunks an approximate index (usearch's HNSW has wheels for
every platform Home Assistant runs on) can implement `VectorIndex` instead.

Vectors are unit length, so a dot product is their cosine similarity.
"""

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

type ChunkIds = npt.NDArray[np.int64]
type Vectors = npt.NDArray[np.float32]
type Scores = npt.NDArray[np.float32]
# Which chunk ids a search may return: the ids themselves, or a mask over ids in which
# `allowed[id]` is True for those that may (ids past its end may not).
type AllowedIds = npt.NDArray[np.int64] | npt.NDArray[np.bool_]

_MIN_CAPACITY = 1024
# Below this share of rows allowed, scoring only those rows (gathered first) is cheaper
# than scoring every row and discarding the rest.
_GATHER_SHARE = 0.25


class VectorIndex(Protocol):
    """Chunk vectors by chunk id, searched by cosine similarity."""

    @property
    def dim(self) -> int:
        """The length of every vector."""

    def __len__(self) -> int:
        """Return how many vectors the index holds."""

    def add(self, ids: Sequence[int] | ChunkIds, vectors: Vectors) -> None:
        """Add one unit vector per id (ids must be new).

        Raises:
            ValueError: an id is already in the index, or the shapes do not fit.
        """

    def remove(self, ids: Sequence[int] | ChunkIds) -> None:
        """Remove the vectors of `ids`; ids not in the index are ignored."""

    def search(
        self, vector: Vectors, k: int, allowed: AllowedIds | None = None
    ) -> tuple[ChunkIds, Scores]:
        """Return the ids and cosines of the `k` vectors closest to `vector`, closest first.

        With `allowed`, only those ids are candidates: the filter applies before the
        top k are chosen, so a filtered search returns k hits whenever k are allowed.
        """


class ExactIndex:
    """Exact cosine search over all vectors in one contiguous numpy matrix.

    Rows are kept packed at the front of a matrix that grows by doubling (amortised
    O(1) per added vector); a removed row is filled with one of the last rows, so
    removal costs O(removed) and the matrix stays contiguous.
    """

    def __init__(self, dim: int) -> None:
        """Make an empty index of `dim`-long vectors."""
        self._dim = dim
        self._vectors: Vectors = np.empty((0, dim), dtype=np.float32)
        self._ids: ChunkIds = np.empty(0, dtype=np.int64)
        self._size = 0
        self._row_of: dict[int, int] = {}

    @property
    def dim(self) -> int:
        """The length of every vector."""
        return self._dim

    def __len__(self) -> int:
        """Return how many vectors the index holds."""
        return self._size

    def add(self, ids: Sequence[int] | ChunkIds, vectors: Vectors) -> None:
        """Add one unit vector per id (ids must be new).

        Raises:
            ValueError: an id is already in the index, or the shapes do not fit.
        """
        new_ids = np.asarray(ids, dtype=np.int64)
        rows = np.asarray(vectors, dtype=np.float32)
        if rows.ndim != 2 or rows.shape != (len(new_ids), self._dim):  # noqa: PLR2004
            raise ValueError(f"expected {len(new_ids)} vectors of {self._dim}, got {rows.shape}")
        id_list = new_ids.tolist()
        if len(set(id_list)) != len(id_list) or not self._row_of.keys().isdisjoint(id_list):
            raise ValueError("chunk ids must be new to the index")
        end = self._size + len(new_ids)
        self._reserve(end)
        self._vectors[self._size : end] = rows
        self._ids[self._size : end] = new_ids
        self._row_of.update(zip(id_list, range(self._size, end), strict=True))
        self._size = end

    def remove(self, ids: Sequence[int] | ChunkIds) -> None:
        """Remove the vectors of `ids`; ids not in the index are ignored."""
        removed = sorted(
            {
                row
                for chunk_id in np.asarray(ids, dtype=np.int64).tolist()
                if (row := self._row_of.pop(chunk_id, None)) is not None
            }
        )
        if not removed:
            return
        rows = np.asarray(removed, dtype=np.int64)
        size = self._size - len(rows)
        # Rows past the new end are dropped; holes before it take the surviving ones.
        holes = rows[rows < size]
        tail = np.arange(size, self._size, dtype=np.int64)
        movers = tail[~np.isin(tail, rows)]
        self._vectors[holes] = self._vectors[movers]
        self._ids[holes] = self._ids[movers]
        self._row_of.update(zip(self._ids[holes].tolist(), holes.tolist(), strict=True))
        self._size = size
        if len(self._vectors) > _MIN_CAPACITY and size < len(self._vectors) // 4:
            self._resize(max(_MIN_CAPACITY, 2 * size))

    def search(
        self, vector: Vectors, k: int, allowed: AllowedIds | None = None
    ) -> tuple[ChunkIds, Scores]:
        """Return the ids and cosines of the `k` vectors closest to `vector`, closest first.

        With `allowed`, only those ids are candidates: the filter applies before the
        top k are chosen, so a filtered search returns k hits whenever k are allowed.
        """
        query = np.asarray(vector, dtype=np.float32).reshape(self._dim)
        ids = self._ids[: self._size]
        vectors = self._vectors[: self._size]
        mask: npt.NDArray[np.bool_] | None = None
        if allowed is not None:
            mask = self._row_mask(allowed)
            if np.count_nonzero(mask) < _GATHER_SHARE * self._size:
                rows = np.flatnonzero(mask)
                ids, vectors = ids[rows], vectors[rows]
                mask = None
        scores: Scores = vectors @ query
        if mask is not None:
            scores[~mask] = -np.inf
        count = min(k, len(scores) if mask is None else int(np.count_nonzero(mask)))
        if count <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        # Partition for the k best in O(n), then sort only those k.
        best = np.argpartition(-scores, count - 1)[:count]
        best = best[np.argsort(-scores[best], kind="stable")]
        return ids[best].copy(), scores[best].copy()

    def _row_mask(self, allowed: AllowedIds) -> npt.NDArray[np.bool_]:
        """Return for each row whether its id is allowed."""
        ids = self._ids[: self._size]
        if allowed.dtype == np.bool_:
            # A mask over ids: look each row's id up in it; ids past its end are out.
            inside = ids < len(allowed)
            mask = np.zeros(self._size, dtype=np.bool_)
            mask[inside] = allowed[ids[inside]]
            return mask
        return np.isin(ids, allowed)

    def _reserve(self, size: int) -> None:
        if size > len(self._vectors):
            self._resize(max(_MIN_CAPACITY, size, 2 * len(self._vectors)))

    def _resize(self, capacity: int) -> None:
        vectors = np.empty((capacity, self._dim), dtype=np.float32)
        ids = np.empty(capacity, dtype=np.int64)
        vectors[: self._size] = self._vectors[: self._size]
        ids[: self._size] = self._ids[: self._size]
        self._vectors, self._ids = vectors, ids
