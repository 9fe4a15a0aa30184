"""Retrieval quality over the shipped workshop corpus, with the real MiniLM and SQLite.

The corpus (`tests/helpers/knowledge_corpus.py`) is written and ingested once for the
module into a KnowledgeBase on a temp folder; every query of the shipped query set
(`benchmarks/data/knowledge_queries.json`) and every question of the corpus's facts is
searched once in each mode. A hit counts when it is the place the answer is: the page
of a PDF, the innermost section of a Markdown or HTML document, a text file.
"""

from collections import Counter
from collections.abc import AsyncIterator
import io
from pathlib import Path
import re

from pypdf import PdfReader
import pytest
import pytest_asyncio

from kittyai.contract.rag import SearchMode
from kittyai.embedding import MiniLMEmbedder
from kittyai.rag.knowledge import KnowledgeBase
from kittyai.rag.options import ChunkingOptions
from tests.helpers.knowledge_corpus import (
    QUERY_KINDS,
    Corpus,
    Query,
    check_query_places,
    first_relevant_ranks,
    ingest_corpus,
    load_queries,
    normalise,
    place_text,
    recall_at,
    write_corpus,
)

SHIPPED = load_queries()
# Words that carry no meaning of their own: a paraphrase may share these with its answer.
STOPWORDS = frozenset({
    "a", "an", "and", "are", "at", "be", "by", "can", "do", "does", "for", "from", "get",
    "how", "i", "in", "is", "it", "its", "may", "my", "of", "on", "once", "or", "our", "out",
    "put", "s", "should", "the", "their", "this", "to", "up", "what", "when", "where",
    "which", "will", "with",
})  # fmt: skip

# Per mode, the rank of each query's first relevant hit (None: not in the top 10).
type Ranks = dict[SearchMode, dict[Query, int | None]]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def knowledge(
    corpus: Corpus, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[KnowledgeBase]:
    knowledge = await KnowledgeBase.open(
        tmp_path_factory.mktemp("knowledge") / "knowledge.sqlite3",
        MiniLMEmbedder.load(),
        ChunkingOptions(),
    )
    await ingest_corpus(knowledge, corpus)
    yield knowledge
    await knowledge.close()


async def rank_all(knowledge: KnowledgeBase, queries: list[Query]) -> Ranks:
    return {
        mode: dict(zip(queries, await first_relevant_ranks(knowledge, queries, mode), strict=True))
        for mode in SearchMode
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shipped_ranks(knowledge: KnowledgeBase) -> Ranks:
    return await rank_all(knowledge, SHIPPED)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fact_ranks(knowledge: KnowledgeBase, corpus: Corpus) -> Ranks:
    return await rank_all(knowledge, corpus.fact_queries())


def content_words(text: str) -> set[str]:
    """Return the lower-cased words of `text` that carry meaning, plurals folded."""
    words = set()
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        if word not in STOPWORDS:
            words.add(word[:-1] if len(word) > 3 and word.endswith("s") else word)
    return words


def misses(ranks: dict[Query, int | None], k: int, *, kind: str | None = None) -> list[str]:
    """Return the queries (of `kind`) without a relevant hit in their top `k`, with ranks."""
    return [
        f"{query.text!r} -> {query.place} (rank {rank})"
        for query, rank in ranks.items()
        if (kind is None or query.kind == kind) and (rank is None or rank > k)
    ]


def test_the_corpus_is_the_same_every_time_with_each_fact_on_its_page(
    corpus: Corpus, tmp_path: Path
) -> None:
    again = write_corpus(tmp_path)
    for first, second in zip(corpus.files, again.files, strict=True):
        assert first.path.read_bytes() == second.path.read_bytes(), first.name

    # The PDFs as a reader sees them, not only the text they were made from.
    pages = {
        corpus_file.name: [
            normalise(page.extract_text())
            for page in PdfReader(io.BytesIO(corpus_file.path.read_bytes())).pages
        ]
        for corpus_file in corpus.files
        if corpus_file.media_type == "application/pdf"
    }
    assert corpus.pdf_pages == sum(len(document) for document in pages.values()) >= 30
    pdf_facts = [fact for fact in corpus.facts if fact.place.page is not None]
    assert len(pdf_facts) >= 40
    for fact in pdf_facts:
        on_pages = [
            number
            for number, text in enumerate(pages[fact.place.file], start=1)
            if normalise(fact.answer) in text
        ]
        assert on_pages == [fact.place.page], fact.id


def test_the_query_set_is_written_as_its_description_says() -> None:
    kinds = Counter(query.kind for query in SHIPPED)
    assert len(SHIPPED) >= 60
    assert min(kinds[kind] for kind in QUERY_KINDS) >= 15, kinds
    assert len({query.text.lower() for query in SHIPPED}) == len(SHIPPED)
    check_query_places(SHIPPED)
    for query in SHIPPED:
        if query.kind == "keyword":
            # Typed as printed: every word is on the page, as the user saw it there.
            assert content_words(query.text) <= content_words(place_text(query.place)), query
        if query.kind == "paraphrase":
            shared = content_words(query.text) & content_words(query.answer)
            assert shared == set(), f"{query.text!r} shares {shared} with its answer"


def test_every_fact_question_finds_its_page_or_section_in_the_top_3(
    fact_ranks: Ranks, shipped_ranks: Ranks
) -> None:
    assert misses(fact_ranks[SearchMode.HYBRID], 3) == []
    assert misses(shipped_ranks[SearchMode.HYBRID], 3, kind="fact") == []


def test_keyword_queries_are_found_by_keyword_search(shipped_ranks: Ranks) -> None:
    assert misses(shipped_ranks[SearchMode.KEYWORD], 5, kind="keyword") == []


def test_paraphrases_are_found_by_vector_search(shipped_ranks: Ranks) -> None:
    paraphrases = [
        query for query in shipped_ranks[SearchMode.VECTOR] if query.kind == "paraphrase"
    ]
    recall = {
        mode: recall_at([shipped_ranks[mode][query] for query in paraphrases], 5)
        for mode in (SearchMode.VECTOR, SearchMode.KEYWORD)
    }

    # MiniLM places two of the 24 at ranks 7 and 8 ("which plastic survives sunshine
    # in the garden" for UV resistance): every one is in the top 10, nine in ten in
    # the top 5, where words alone find fewer than half.
    assert misses(shipped_ranks[SearchMode.VECTOR], 10, kind="paraphrase") == []
    assert recall[SearchMode.VECTOR] >= 0.9, recall
    assert recall[SearchMode.KEYWORD] < 0.5, recall


def test_hybrid_recalls_more_than_either_search_alone(
    shipped_ranks: Ranks, fact_ranks: Ranks
) -> None:
    shipped = {mode: recall_at(list(ranks.values()), 5) for mode, ranks in shipped_ranks.items()}
    combined = {
        mode: recall_at([*shipped_ranks[mode].values(), *fact_ranks[mode].values()], 5)
        for mode in SearchMode
    }

    assert shipped[SearchMode.HYBRID] >= shipped[SearchMode.VECTOR], shipped
    assert shipped[SearchMode.HYBRID] >= shipped[SearchMode.KEYWORD], shipped
    assert combined[SearchMode.HYBRID] > combined[SearchMode.VECTOR], combined
    assert combined[SearchMode.HYBRID] > combined[SearchMode.KEYWORD], combined
