"""What the answer cache's lookups cost at 10,000 entries, beside the bare operations.

A real `AnswerCache` (SQLite in a temp folder) is filled with random unit vectors
plus a few real MiniLM questions, all in one scope (the worst case), closed and
opened again, then timed:

- `find_similar` (the semantic lookup without embedding) against a bare numpy
  `matrix @ q` + argmax over the same matrix;
- the exact tier (`exact_key` + dict lookup) against a bare dict lookup of a
  precomputed key;
- whole `lookup()` calls (exact hit, and semantic hit with its embedding);
- the MiniLM embedding of one short question, which a semantic lookup adds.

Goal: a lookup at 10k entries under 2 ms, excluding embedding time.

    python benchmarks/semantic_cache.py [--entries 10000] [--lookups 2000]
"""

import argparse
import asyncio
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
import itertools
from pathlib import Path
import tempfile
import time

import numpy as np

from kittyai.contract.routing import TokenUsage
from kittyai.embedding import MiniLMEmbedder
from kittyai.router.backends.base import BackendReply
from kittyai.router.cache import AnswerCache, exact_key
from kittyai.router.options import CacheOptions

GOAL_MS = 2.0
SCOPE = "auto:0123456789abcdef"
# Stored questions, and a paraphrase of each that should hit.
REAL = [
    ("how do I dry PETG filament?", "what's the best way to dry petg filament"),
    ("How do I sharpen a chisel?", "what is the best way to sharpen chisels"),
    ("How do I level the bed on my printer?", "how to level a 3d printer bed"),
    ("What glue should I use to bond PLA to wood?", "which glue works best for gluing PLA to wood"),
    ("How do I reduce stringing with PETG?", "how can I stop PETG from stringing"),
    ("What size drill bit for an M6 tap?", "which drill size do I need to tap M6 threads"),
]
REPLY = BackendReply(content="A cached answer.", model="gpt-5-mini", usage=TokenUsage())
SHORT_QUERIES = [paraphrase for _, paraphrase in REAL] + [
    "Why is my first layer not sticking?",
    "What feed rate for a 6 mm end mill in aluminium?",
]


@dataclass
class PrecomputedEmbedder:
    """Hands out vectors made beforehand, so 10,000 entries are stored in seconds."""

    vectors: dict[str, np.ndarray]
    id: str
    dim: int

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.vectors[text] for text in texts])


@dataclass
class Timing:
    p50_ms: float
    p99_ms: float


def time_calls(call: Callable[[], object], count: int) -> Timing:
    call()
    samples = np.empty(count)
    for index in range(count):
        start = time.perf_counter_ns()
        call()
        samples[index] = time.perf_counter_ns() - start
    p50, p99 = np.percentile(samples, [50, 99]) / 1e6
    return Timing(float(p50), float(p99))


async def time_async_calls(call: Callable[[], object], count: int) -> Timing:
    await call()
    samples = np.empty(count)
    for index in range(count):
        start = time.perf_counter_ns()
        await call()
        samples[index] = time.perf_counter_ns() - start
    p50, p99 = np.percentile(samples, [50, 99]) / 1e6
    return Timing(float(p50), float(p99))


def random_unit_vectors(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def row(name: str, timing: Timing, ratio: float | None = None) -> str:
    line = f"{name:44}{timing.p50_ms:9.4f}{timing.p99_ms:9.4f}"
    return line + (f"{ratio:9.2f}" if ratio is not None else "")


def case_variants(text: str) -> Iterator[str]:
    """Yield distinct spellings of `text` that differ only in the case of its letters."""
    letters = [position for position, char in enumerate(text) if char.isalpha()]
    for bits in range(1, 2 ** len(letters)):
        chars = list(text)
        for bit, position in enumerate(letters):
            if bits >> bit & 1:
                chars[position] = chars[position].swapcase()
        yield "".join(chars)


@dataclass
class Filled:
    cache: AnswerCache
    questions: list[str]
    vectors: dict[str, np.ndarray]
    fill_s: float
    open_s: float


async def fill(
    path: Path, entries: int, minilm: MiniLMEmbedder, rng: np.random.Generator
) -> Filled:
    """Store `entries` answers in one scope, then open the file again as a restart would."""
    texts = [text for pair in REAL for text in pair]
    vectors = dict(zip(texts, minilm.encode(texts), strict=True))
    questions = [stored for stored, _ in REAL]
    for index, vector in enumerate(random_unit_vectors(rng, entries - len(REAL), minilm.dim)):
        questions.append(f"synthetic question {index:06d}")
        vectors[questions[-1]] = vector
    embedder = PrecomputedEmbedder(vectors, minilm.id, minilm.dim)
    options = CacheOptions(max_entries=entries)

    cache = await AnswerCache.open(path, options, embedder)
    start = time.perf_counter()
    for question in questions:
        await cache.store(SCOPE, ask(question), REPLY, backend="openai")
    fill_s = time.perf_counter() - start
    await cache.close()

    start = time.perf_counter()
    cache = await AnswerCache.open(path, options, embedder)
    open_s = time.perf_counter() - start
    assert len(cache) == entries, len(cache)
    return Filled(cache, questions, vectors, fill_s, open_s)


def time_pure_lookups(
    filled: Filled, lookups: int, rng: np.random.Generator
) -> tuple[Timing, Timing, Timing, Timing]:
    """Time find_similar, bare numpy, the exact tier and a bare dict, in that order."""
    cache, questions, vectors = filled.cache, filled.questions, filled.vectors
    # Queries: mostly misses (random directions), and each real paraphrase a few times.
    queries = list(random_unit_vectors(rng, lookups, len(next(iter(vectors.values())))))
    for index in range(0, lookups, 50):
        queries[index] = vectors[REAL[index // 50 % len(REAL)][1]]
    matrix = np.stack([vectors[question] for question in questions])
    query_order = itertools.cycle(queries)

    def bare_numpy() -> object:
        scores = matrix @ next(query_order)
        best = int(np.argmax(scores))
        return best, float(scores[best])

    def find_similar() -> object:
        return cache.find_similar(SCOPE, next(query_order))

    keys = [exact_key(SCOPE, ask(question)) for question in questions]
    table = dict.fromkeys(keys, REPLY)
    key_order = itertools.cycle(keys)
    question_order = itertools.cycle(questions)

    def bare_dict() -> object:
        return table.get(next(key_order))

    def exact_tier() -> object:
        return table.get(exact_key(SCOPE, ask(next(question_order))))

    return (
        time_calls(find_similar, lookups),
        time_calls(bare_numpy, lookups),
        time_calls(exact_tier, lookups),
        time_calls(bare_dict, lookups),
    )


async def time_semantic_lookup(path: Path, minilm: MiniLMEmbedder, count: int) -> Timing:
    """Time whole semantic hits with the real embedder, each embedding its question."""
    cache = await AnswerCache.open(path, CacheOptions(), minilm)
    try:
        for stored, _ in REAL:
            await cache.store(SCOPE, ask(stored), REPLY, backend="openai")
        # MiniLM is uncased, so case variants of a paraphrase embed alike, but each is
        # new text to the cache's memo of recent questions: every call embeds.
        variants = case_variants(REAL[0][1])

        async def semantic_hit() -> None:
            hit = await cache.lookup(SCOPE, ask(next(variants)))
            assert hit is not None
            assert hit.kind == "semantic"

        return await time_async_calls(semantic_hit, count)
    finally:
        await cache.close()


async def benchmark(args: argparse.Namespace, workdir: Path) -> None:
    minilm = MiniLMEmbedder.load()
    rng = np.random.default_rng(20261122)
    filled = await fill(workdir / "cache.sqlite3", args.entries, minilm, rng)
    cache = filled.cache
    try:
        print(f"{args.entries} entries in one scope, {minilm.dim}-d float32")
        print(f"fill via store(): {filled.fill_s:.1f} s; reopen: {filled.open_s * 1000:.0f} ms")
        print("real paraphrases (threshold 0.9):")
        for stored, paraphrase in REAL:
            similarity = float(filled.vectors[stored] @ filled.vectors[paraphrase])
            found = cache.find_similar(SCOPE, filled.vectors[paraphrase])
            verdict = "hit " if found is not None and found[0].question == stored else "miss"
            print(f"  {verdict} {similarity:.3f}  {paraphrase!r} ~ {stored!r}")
        print()

        semantic, baseline, exact, dict_only = time_pure_lookups(filled, args.lookups, rng)
        print(f"{'':44}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>9}")
        print(row("bare numpy: matrix @ q + argmax", baseline))
        print(row("AnswerCache.find_similar", semantic, semantic.p50_ms / baseline.p50_ms))
        print(row("bare dict.get (precomputed key)", dict_only))
        print(row("exact tier: exact_key + dict.get", exact, exact.p50_ms / dict_only.p50_ms))

        exact_messages = ask(REAL[0][0].upper())
        exact_lookup = await time_async_calls(
            lambda: cache.lookup(SCOPE, exact_messages), min(args.lookups, 500)
        )
        print(row("lookup(), exact hit (incl. SQLite hit count)", exact_lookup))
    finally:
        await cache.close()

    queries = itertools.cycle(SHORT_QUERIES)
    embedding = time_calls(lambda: minilm.encode([next(queries)]), args.embeddings)
    print(row("MiniLM embedding of one short question", embedding))
    whole = await time_semantic_lookup(workdir / "live.sqlite3", minilm, args.embeddings)
    print(row("lookup(), semantic hit incl. embedding", whole))

    met = semantic.p99_ms < GOAL_MS and exact.p99_ms < GOAL_MS
    print(
        f"\ngoal: lookup at {args.entries} entries under {GOAL_MS:g} ms, excluding embedding:"
        f" {'MET' if met else 'NOT MET'} (find_similar p99 {semantic.p99_ms:.3f} ms,"
        f" exact tier p99 {exact.p99_ms:.3f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--lookups", type=int, default=2_000)
    parser.add_argument("--embeddings", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kitty-cache-bench-") as workdir:
        asyncio.run(benchmark(args, Path(workdir)))


if __name__ == "__main__":
    main()
