"""Retrieval quality of the knowledge base: Recall@5 and MRR per search mode and query kind.

The shipped workshop corpus (`tests/helpers/knowledge_corpus.py`: six PDF manuals,
Markdown notes, an HTML wiki page, a text file) is ingested into a real
`KnowledgeBase` (SQLite in a temp folder, the real MiniLM embedder, default
chunking). Every query of the shipped query set (`benchmarks/data/knowledge_queries.json`,
kinds fact, keyword and paraphrase) is searched in each mode: vector only (exact
cosine), keyword only (FTS5 BM25) and hybrid (both fused by reciprocal rank). A hit is
relevant when it is the place of the answer: the page of a PDF, the innermost section
of a Markdown or HTML document, the file of a text document.

- Recall@5: the share of queries with a relevant hit in the top 5;
- MRR: the mean of 1/rank of the first relevant hit in the top 10 (0 if none).

Printed per kind and overall, with the ratios hybrid/vector and hybrid/keyword, then
the same over the combined set (the shipped queries plus every question of the
corpus's facts). `--misses` lists the queries each mode misses.

    .venv/bin/python -m benchmarks.knowledge_retrieval [--misses]
"""

import argparse
import asyncio
from pathlib import Path
import tempfile
import time

from kittyai.contract.rag import SearchMode
from kittyai.embedding import MiniLMEmbedder
from kittyai.rag.knowledge import KnowledgeBase
from kittyai.rag.options import ChunkingOptions
from tests.helpers.knowledge_corpus import (
    QUERY_KINDS,
    Query,
    first_relevant_ranks,
    ingest_corpus,
    load_queries,
    mean_reciprocal_rank,
    recall_at,
    write_corpus,
)

MODES = (SearchMode.VECTOR, SearchMode.KEYWORD, SearchMode.HYBRID)
RECALL_K = 5

type Ranks = dict[SearchMode, list[int | None]]


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}" if denominator else "inf"


def print_table(title: str, groups: dict[str, list[int]], ranks: Ranks) -> None:
    print(f"\n{title}")
    header = "".join(f"{mode.value:>18}" for mode in MODES)
    print(f"{'':22}{header}{'hybrid/vector':>16}{'hybrid/keyword':>16}")
    print(f"{'':22}" + f"{'R@5    MRR':>18}" * len(MODES) + f"{'R@5   MRR':>16}" * 2)
    for name, members in groups.items():
        recall = {m: recall_at([ranks[m][i] for i in members], RECALL_K) for m in MODES}
        mrr = {m: mean_reciprocal_rank([ranks[m][i] for i in members]) for m in MODES}
        cells = "".join(f"{recall[m]:11.3f}{mrr[m]:7.3f}" for m in MODES)
        hybrid_r, hybrid_m = recall[SearchMode.HYBRID], mrr[SearchMode.HYBRID]
        ratios = "".join(
            f"{ratio(hybrid_r, recall[other]):>10}{ratio(hybrid_m, mrr[other]):>6}"
            for other in (SearchMode.VECTOR, SearchMode.KEYWORD)
        )
        print(f"  {name + f' ({len(members)})':20}{cells}{ratios}")


def print_misses(queries: list[Query], ranks: Ranks) -> None:
    for mode in MODES:
        print(f"\nmissed by {mode.value} (not in the top {RECALL_K}):")
        for query, rank in zip(queries, ranks[mode], strict=True):
            if rank is None or rank > RECALL_K:
                where = f"p.{query.place.page}" if query.place.page else query.place.section
                print(
                    f"  [{query.kind}] {query.text!r} -> {query.place.file} {where} (rank {rank})"
                )


async def benchmark(args: argparse.Namespace, workdir: Path) -> None:
    corpus = write_corpus(workdir / "corpus")
    knowledge = await KnowledgeBase.open(
        workdir / "knowledge.sqlite3", MiniLMEmbedder.load(), ChunkingOptions()
    )
    try:
        start = time.perf_counter()
        await ingest_corpus(knowledge, corpus)
        counts = await knowledge.counts()
        print(
            f"corpus: {len(corpus.files)} files, {corpus.pdf_pages} PDF pages,"
            f" {counts.chunks} chunks (ingested in {time.perf_counter() - start:.1f} s)"
        )
        shipped = load_queries()
        facts = corpus.fact_queries()
        combined = shipped + facts
        ranks = {mode: await first_relevant_ranks(knowledge, combined, mode) for mode in MODES}
    finally:
        await knowledge.close()

    groups: dict[str, list[int]] = {
        kind: [i for i, query in enumerate(shipped) if query.kind == kind] for kind in QUERY_KINDS
    }
    groups["overall"] = list(range(len(shipped)))
    print_table("shipped query set (benchmarks/data/knowledge_queries.json)", groups, ranks)
    print_table(
        "combined set: shipped queries + the corpus's fact questions",
        {
            "shipped": list(range(len(shipped))),
            "fact questions": list(range(len(shipped), len(combined))),
            "overall": list(range(len(combined))),
        },
        ranks,
    )
    if args.misses:
        print_misses(combined, ranks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misses", action="store_true", help="list each mode's misses")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kitty-retrieval-bench-") as workdir:
        asyncio.run(benchmark(args, Path(workdir)))


if __name__ == "__main__":
    main()
