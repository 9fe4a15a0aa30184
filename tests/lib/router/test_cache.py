"""The answer cache over a real SQLite file and the real offline MiniLM embedder."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
import sqlite3

import numpy as np
import pytest

from kittyai.contract.routing import TokenUsage
from kittyai.embedding import MiniLMEmbedder
from kittyai.router.backends.base import BackendReply, TokenLogprob, ToolCall
from kittyai.router.cache import MAX_SEMANTIC_CHARS, AnswerCache
from kittyai.router.options import CacheOptions

SCOPE = "auto:0123456789abcdef"
DRY_PETG = "how do I dry PETG filament?"
# Paraphrases MiniLM puts above 0.9 (0.950 and 0.937), and related questions it
# puts well below (0.796 and 0.713): they ask for something else.
DRY_PETG_AGAIN = "what's the best way to dry petg filament"
SHARPEN_CHISEL = "How do I sharpen a chisel?"
SHARPEN_CHISEL_AGAIN = "what is the best way to sharpen chisels"
DRY_NYLON = "how do I dry nylon filament?"
SHARPEN_DRILL = "How do I sharpen a drill bit?"


class Clock:
    """The cache's idea of now, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder.load()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "answers.sqlite3"


@pytest.fixture
async def cache(path: Path, embedder: MiniLMEmbedder, clock: Clock) -> AsyncIterator[AnswerCache]:
    cache = await AnswerCache.open(path, CacheOptions(), embedder, clock=clock)
    yield cache
    await cache.close()


def ask(text: str) -> list[dict]:
    return [
        {"role": "system", "content": "You are KITTY, the workshop's assistant."},
        {"role": "user", "content": text},
    ]


def answer(text: str, **fields) -> BackendReply:
    return BackendReply(
        content=text,
        model="gpt-5-mini",
        usage=TokenUsage(input=120, output=80),
        **fields,
    )


async def test_exact_repeat_is_served_whatever_its_case_and_spacing(cache: AnswerCache) -> None:
    await cache.store(SCOPE, ask(DRY_PETG), answer("65 °C for 4 hours."), backend="openai")

    hit = await cache.lookup(SCOPE, ask("  How do I   DRY petg Filament?\n"))

    assert hit is not None
    assert (hit.kind, hit.similarity, hit.backend) == ("exact", 1.0, "openai")
    assert hit.reply.content == "65 °C for 4 hours."
    assert hit.reply.model == "gpt-5-mini"
    # Served from the cache, the answer spent no tokens.
    assert hit.reply.usage == TokenUsage()
    assert hit.stored_at == datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


async def test_exact_tier_works_without_an_embedder(path: Path, clock: Clock) -> None:
    cache = await AnswerCache.open(path, CacheOptions(), None, clock=clock)
    try:
        await cache.store(SCOPE, ask(DRY_PETG), answer("65 °C for 4 hours."), backend="openai")
        assert (await cache.lookup(SCOPE, ask(DRY_PETG.upper()))).kind == "exact"
        assert await cache.lookup(SCOPE, ask(DRY_PETG_AGAIN)) is None
    finally:
        await cache.close()


@pytest.mark.parametrize(
    ("stored", "asked"),
    [(DRY_PETG, DRY_PETG_AGAIN), (SHARPEN_CHISEL, SHARPEN_CHISEL_AGAIN)],
    ids=["dry petg", "sharpen chisel"],
)
async def test_paraphrase_is_served_with_its_similarity(
    cache: AnswerCache, stored: str, asked: str
) -> None:
    await cache.store(SCOPE, ask(stored), answer("The answer."), backend="anthropic")

    hit = await cache.lookup(SCOPE, ask(asked))

    assert hit is not None
    assert hit.kind == "semantic"
    assert 0.9 <= hit.similarity < 1.0
    assert hit.reply.content == "The answer."
    assert hit.backend == "anthropic"


@pytest.mark.parametrize(
    ("stored", "asked"),
    [(DRY_PETG, DRY_NYLON), (SHARPEN_CHISEL, SHARPEN_DRILL), (DRY_PETG, SHARPEN_CHISEL)],
    ids=["nylon is not petg", "drill bit is not chisel", "unrelated"],
)
async def test_a_different_question_misses(cache: AnswerCache, stored: str, asked: str) -> None:
    await cache.store(SCOPE, ask(stored), answer("The answer."), backend="openai")
    assert await cache.lookup(SCOPE, ask(asked)) is None


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("What layer height for a 0.4 nozzle?", "What layer height for a 0.6 nozzle?"),
        ("What size drill for an M6 tap?", "What size drill for an M8 tap?"),
        ("Convert 3/8 inch to millimetres", "Convert 5/8 inch to millimetres"),
    ],
    ids=["nozzle size", "thread size", "fraction"],
)
async def test_other_numbers_miss_although_minilm_finds_them_alike(
    cache: AnswerCache, embedder: MiniLMEmbedder, stored: str, asked: str
) -> None:
    vectors = await embedder.embed([stored, asked])
    assert float(vectors[0] @ vectors[1]) >= 0.9
    await cache.store(SCOPE, ask(stored), answer("The answer."), backend="openai")

    assert await cache.lookup(SCOPE, ask(asked)) is None


async def test_same_numbers_in_other_words_hit(cache: AnswerCache) -> None:
    stored = "What layer height for a 0.4 nozzle?"
    await cache.store(SCOPE, ask(stored), answer("0.2 mm."), backend="openai")

    hit = await cache.lookup(SCOPE, ask("which layer height for a 0.4 mm nozzle"))

    assert hit is not None
    assert hit.kind == "semantic"


async def test_best_match_wins(cache: AnswerCache, embedder: MiniLMEmbedder) -> None:
    await cache.store(SCOPE, ask(DRY_NYLON), answer("Nylon: 70 °C."), backend="openai")
    await cache.store(SCOPE, ask(DRY_PETG), answer("PETG: 65 °C."), backend="openai")
    await cache.store(SCOPE, ask(SHARPEN_CHISEL), answer("Use a stone."), backend="openai")

    [vector] = await embedder.embed([DRY_PETG_AGAIN])
    found = cache.find_similar(SCOPE, vector)

    assert found is not None
    entry, similarity = found
    assert entry.question == DRY_PETG
    assert similarity == pytest.approx(0.95, abs=0.01)


async def test_similarity_threshold_is_configurable(
    path: Path, embedder: MiniLMEmbedder, clock: Clock
) -> None:
    strict = CacheOptions(similarity=0.97)
    cache = await AnswerCache.open(path, strict, embedder, clock=clock)
    try:
        await cache.store(SCOPE, ask(DRY_PETG), answer("65 °C."), backend="openai")
        assert await cache.lookup(SCOPE, ask(DRY_PETG_AGAIN)) is None
        assert (await cache.lookup(SCOPE, ask(DRY_PETG))).kind == "exact"
    finally:
        await cache.close()


async def test_semantic_tier_can_be_switched_off(
    path: Path, embedder: MiniLMEmbedder, clock: Clock
) -> None:
    cache = await AnswerCache.open(path, CacheOptions(semantic=False), embedder, clock=clock)
    try:
        await cache.store(SCOPE, ask(DRY_PETG), answer("65 °C."), backend="openai")
        assert await cache.lookup(SCOPE, ask(DRY_PETG_AGAIN)) is None
        assert (await cache.lookup(SCOPE, ask(DRY_PETG))).kind == "exact"
    finally:
        await cache.close()


@pytest.mark.parametrize(
    "question",
    ["Is the garage door open?", "What's the temperature in the workshop?"],
)
async def test_live_state_is_never_served_even_when_asked_before(
    cache: AnswerCache, question: str
) -> None:
    await cache.store(SCOPE, ask(question), answer("It is closed."), backend="openai")

    assert await cache.lookup(SCOPE, ask(question)) is None
    assert len(cache) == 0


async def test_live_state_is_never_served_from_a_close_general_question(
    path: Path, embedder: MiniLMEmbedder, clock: Clock
) -> None:
    # A loose threshold (their similarity is 0.76) would match them; the policy still refuses.
    loose = CacheOptions(similarity=0.5)
    cache = await AnswerCache.open(path, loose, embedder, clock=clock)
    try:
        general = "What temperature should the garage be kept at for printing?"
        await cache.store(SCOPE, ask(general), answer("15 to 25 °C."), backend="openai")
        assert (await cache.lookup(SCOPE, ask(general))).kind == "exact"

        assert await cache.lookup(SCOPE, ask("What is the temperature in the garage?")) is None
    finally:
        await cache.close()


async def test_fresh_facts_are_never_served(cache: AnswerCache) -> None:
    question = "What's the latest Klipper release?"
    await cache.store(SCOPE, ask(question), answer("v0.13.0"), backend="perplexity")

    assert await cache.lookup(SCOPE, ask(question)) is None
    assert len(cache) == 0


async def test_scopes_never_share_answers(cache: AnswerCache) -> None:
    await cache.store(SCOPE, ask(DRY_PETG), answer("65 °C."), backend="openai")

    other = "local:fedcba9876543210"
    assert await cache.lookup(other, ask(DRY_PETG)) is None
    assert await cache.lookup(other, ask(DRY_PETG_AGAIN)) is None


async def test_tool_turns_are_never_stored(cache: AnswerCache) -> None:
    call = ToolCall(id="call_1", name="HassTurnOn", arguments='{"area": "workshop"}')
    messages = [
        *ask("Switch on the workshop lights, please"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "HassTurnOn", "arguments": '{"area": "workshop"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"success": true}'},
    ]
    await cache.store(SCOPE, messages, answer("The lights are on."), backend="openai")
    # A reply that asks for a tool is a step, not an answer.
    request = ask("Switch on the workshop lights, please")
    await cache.store(
        SCOPE, request, answer("", tool_calls=(call,), finish_reason="tool_calls"), backend="x"
    )

    assert len(cache) == 0
    assert await cache.lookup(SCOPE, messages) is None
    assert await cache.lookup(SCOPE, request) is None


async def test_empty_answers_are_not_stored(cache: AnswerCache) -> None:
    await cache.store(SCOPE, ask(DRY_PETG), answer("  \n"), backend="openai")
    assert len(cache) == 0


async def test_follow_ups_only_repeat_exactly(cache: AnswerCache) -> None:
    def conversation(question: str, follow_up: str) -> list[dict]:
        return [
            *ask(question),
            {"role": "assistant", "content": "65 °C for 4 hours."},
            {"role": "user", "content": follow_up},
        ]

    stored = conversation(DRY_PETG, "and nylon?")
    await cache.store(SCOPE, stored, answer("Nylon: 70 °C for 8 hours."), backend="openai")

    assert (await cache.lookup(SCOPE, conversation(DRY_PETG, "And Nylon?"))).kind == "exact"
    # Same follow-up, other first question: "and nylon?" means something else here.
    assert await cache.lookup(SCOPE, conversation(SHARPEN_CHISEL, "and nylon?")) is None
    # The follow-up alone is not the same conversation.
    assert await cache.lookup(SCOPE, ask("and nylon?")) is None


async def test_long_pastes_only_repeat_exactly(cache: AnswerCache) -> None:
    log = "Klipper log:\n" + "mcu 'mcu': Timer too close\n" * 40
    assert len(log) > MAX_SEMANTIC_CHARS
    await cache.store(SCOPE, ask(log + "What is wrong?"), answer("Lower the rate."), backend="o")

    assert (await cache.lookup(SCOPE, ask(log + "What is wrong?"))).kind == "exact"
    assert await cache.lookup(SCOPE, ask(log + "Which board is this?")) is None


async def test_a_new_answer_replaces_the_old_one(cache: AnswerCache) -> None:
    await cache.store(SCOPE, ask(DRY_PETG), answer("60 °C."), backend="ollama")
    await cache.store(SCOPE, ask(DRY_PETG), answer("65 °C for 4 hours."), backend="openai")

    assert len(cache) == 1
    hit = await cache.lookup(SCOPE, ask(DRY_PETG_AGAIN))
    assert (hit.reply.content, hit.backend) == ("65 °C for 4 hours.", "openai")


async def test_expired_answers_are_not_served(
    path: Path, embedder: MiniLMEmbedder, clock: Clock
) -> None:
    cache = await AnswerCache.open(path, CacheOptions(ttl_hours=24), embedder, clock=clock)
    try:
        await cache.store(SCOPE, ask(DRY_PETG), answer("65 °C."), backend="openai")
        clock.advance(hours=23, minutes=59)
        assert (await cache.lookup(SCOPE, ask(DRY_PETG))).kind == "exact"
        assert (await cache.lookup(SCOPE, ask(DRY_PETG_AGAIN))).kind == "semantic"

        clock.advance(minutes=2)
        assert await cache.lookup(SCOPE, ask(DRY_PETG)) is None
        assert await cache.lookup(SCOPE, ask(DRY_PETG_AGAIN)) is None
        # Storing something else purges what expired.
        await cache.store(SCOPE, ask(SHARPEN_CHISEL), answer("Use a stone."), backend="openai")
        assert len(cache) == 1
    finally:
        await cache.close()


async def test_expired_answers_are_purged_on_open(
    path: Path, embedder: MiniLMEmbedder, clock: Clock
) -> None:
    cache = await AnswerCache.open(path, CacheOptions(ttl_hours=1), embedder, clock=clock)
    await cache.store(SCOPE, ask(DRY_PETG), answer("65 °C."), backend="openai")
    clock.advance(minutes=30)
    await cache.store(SCOPE, ask(SHARPEN_CHISEL), answer("Use a stone."), backend="openai")
    await cache.close()

    clock.advance(minutes=45)
    cache = await AnswerCache.open(path, CacheOptions(ttl_hours=1), embedder, clock=clock)
    try:
        assert len(cache) == 1
        assert await cache.lookup(SCOPE, ask(DRY_PETG)) is None
        assert (await cache.lookup(SCOPE, ask(SHARPEN_CHISEL_AGAIN))).kind == "semantic"
    finally:
        await cache.close()


async def test_oldest_answers_are_evicted_beyond_the_limit(
    path: Path, embedder: MiniLMEmbedder, clock: Clock
) -> None:
    options = CacheOptions(max_entries=2)
    cache = await AnswerCache.open(path, options, embedder, clock=clock)
    for question in (DRY_PETG, DRY_NYLON, SHARPEN_CHISEL):
        await cache.store(SCOPE, ask(question), answer(f"About {question}"), backend="openai")
        clock.advance(seconds=1)

    assert len(cache) == 2
    assert await cache.lookup(SCOPE, ask(DRY_PETG)) is None
    assert await cache.lookup(SCOPE, ask(DRY_PETG_AGAIN)) is None
    assert (await cache.lookup(SCOPE, ask(DRY_NYLON))).kind == "exact"
    assert (await cache.lookup(SCOPE, ask(SHARPEN_CHISEL_AGAIN))).kind == "semantic"
    await cache.close()

    # The file holds what memory held; a lower limit applies on open.
    cache = await AnswerCache.open(path, CacheOptions(max_entries=1), embedder, clock=clock)
    try:
        assert len(cache) == 1
        assert await cache.lookup(SCOPE, ask(DRY_NYLON)) is None
        assert (await cache.lookup(SCOPE, ask(SHARPEN_CHISEL))).kind == "exact"
    finally:
        await cache.close()


async def test_answers_survive_a_restart(
    path: Path, embedder: MiniLMEmbedder, clock: Clock
) -> None:
    reply = answer(
        "Dry it at 65 °C for 4 hours.",
        citations=("https://help.prusa3d.com/article/petg_2059",),
        logprobs=(TokenLogprob(token="Dry", logprob=-0.01, top=(-0.01, -4.2)),),
    )
    cache = await AnswerCache.open(path, CacheOptions(), embedder, clock=clock)
    await cache.store(SCOPE, ask(DRY_PETG), reply, backend="anthropic")
    await cache.close()

    clock.advance(hours=1)
    cache = await AnswerCache.open(path, CacheOptions(), embedder, clock=clock)
    try:
        exact = await cache.lookup(SCOPE, ask(DRY_PETG))
        semantic = await cache.lookup(SCOPE, ask(DRY_PETG_AGAIN))
    finally:
        await cache.close()

    assert exact.kind == "exact"
    assert semantic.kind == "semantic"
    assert semantic.similarity >= 0.9
    for hit in (exact, semantic):
        assert hit.backend == "anthropic"
        assert hit.stored_at == datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
        assert hit.reply == BackendReply(
            content="Dry it at 65 °C for 4 hours.",
            model="gpt-5-mini",
            citations=("https://help.prusa3d.com/article/petg_2059",),
        )


async def test_restart_without_embedder_keeps_exact_hits(
    path: Path, embedder: MiniLMEmbedder, clock: Clock
) -> None:
    cache = await AnswerCache.open(path, CacheOptions(), embedder, clock=clock)
    await cache.store(SCOPE, ask(DRY_PETG), answer("65 °C."), backend="openai")
    await cache.close()

    cache = await AnswerCache.open(path, CacheOptions(), None, clock=clock)
    try:
        assert (await cache.lookup(SCOPE, ask(DRY_PETG))).kind == "exact"
        assert await cache.lookup(SCOPE, ask(DRY_PETG_AGAIN)) is None
        assert cache.find_similar(SCOPE, np.ones(384, dtype=np.float32) / np.sqrt(384)) is None
    finally:
        await cache.close()


async def test_a_file_from_a_newer_router_is_refused(path: Path, clock: Clock) -> None:
    cache = await AnswerCache.open(path, CacheOptions(), None, clock=clock)
    await cache.close()
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 99")
    connection.close()

    with pytest.raises(RuntimeError, match="schema version 99"):
        await AnswerCache.open(path, CacheOptions(), None, clock=clock)
