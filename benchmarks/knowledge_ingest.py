"""Ingest throughput of the knowledge base (pages/s, chunks/s), beside the direct baseline.

The shipped workshop corpus (`tests/helpers/knowledge_corpus.py`: six PDF manuals of
36 pages, Markdown notes, an HTML page, a text file) is ingested again and again, each
copy under sources of its own, until `--pages` PDF pages are in a real
`KnowledgeBase` (SQLite in a temp folder, the real MiniLM embedder, default chunking).
The knowledge base reuses nothing across sources: each copy is parsed, chunked,
embedded and written again.

The baseline does the two costs that are not the knowledge base's own, directly: pypdf
text extraction of every page (the other files decoded as UTF-8) and the MiniLM
embedding of the very texts the knowledge base embeds (the chunks as the chunker cuts
them, headings included), one batch per document as `ingest()` does. The chunks are
cut beforehand, outside the baseline's time. Both run in alternation, copy by copy, in
one process, after a warm-up pass of the model. The ratio is the knowledge base's time
over the baseline's: what parsing structure, chunking, hashing and SQLite add.

    .venv/bin/python -m benchmarks.knowledge_ingest [--pages 300]
"""

import argparse
import asyncio
from dataclasses import dataclass
import io
import math
import os
from pathlib import Path
import tempfile
import time

import numpy as np
from pypdf import PdfReader

from kittyai.contract.rag import SourceKind
from kittyai.embedding import MiniLMEmbedder
from kittyai.rag.chunking import chunk_document, default_token_counter
from kittyai.rag.knowledge import KnowledgeBase, embedding_text
from kittyai.rag.options import ChunkingOptions
from kittyai.rag.parsing import parse_document
from tests.helpers.knowledge_corpus import Corpus, CorpusFile, write_corpus


@dataclass
class Totals:
    seconds: float = 0.0
    pages: int = 0
    chunks: int = 0

    def line(self, name: str, baseline: Totals | None = None) -> str:
        text = (
            f"  {name:34}{self.seconds:8.1f} s{self.pages / self.seconds:10.1f}"
            f"{self.chunks / self.seconds:11.1f}"
        )
        return text + (f"{self.seconds / baseline.seconds:9.2f}" if baseline else "")


def embedded_texts(corpus: Corpus, options: ChunkingOptions) -> dict[str, list[str]]:
    """Return, per file, the texts the knowledge base embeds for it."""
    counter = default_token_counter()
    texts = {}
    for corpus_file in corpus.files:
        parsed = parse_document(
            corpus_file.path.read_bytes(), name=corpus_file.name, media_type=None
        )
        texts[corpus_file.name] = [
            embedding_text(parsed.title, draft.section, draft.text)
            for draft in chunk_document(parsed, options, counter)
        ]
    return texts


def extract(corpus_file: CorpusFile, content: bytes) -> str:
    if corpus_file.media_type != "application/pdf":
        return content.decode("utf-8")
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)


async def ingest_copy(
    knowledge: KnowledgeBase, corpus: Corpus, contents: dict[str, bytes], copy: int
) -> Totals:
    totals = Totals()
    start = time.perf_counter()
    for corpus_file in corpus.files:
        result = await knowledge.ingest(
            contents[corpus_file.name],
            source=f"share:copy-{copy:03d}/{corpus_file.name}",
            source_kind=SourceKind.SHARE,
            name=corpus_file.name,
            media_type=corpus_file.media_type,
        )
        totals.chunks += result.document.chunks
        if corpus_file.media_type == "application/pdf":
            totals.pages += result.document.pages
    totals.seconds = time.perf_counter() - start
    return totals


def baseline_copy(
    corpus: Corpus, contents: dict[str, bytes], texts: dict[str, list[str]], model: MiniLMEmbedder
) -> Totals:
    totals = Totals()
    start = time.perf_counter()
    for corpus_file in corpus.files:
        extract(corpus_file, contents[corpus_file.name])
        vectors = model.encode(texts[corpus_file.name])
        totals.chunks += len(vectors)
    totals.seconds = time.perf_counter() - start
    totals.pages = corpus.pdf_pages
    return totals


async def benchmark(args: argparse.Namespace, workdir: Path) -> None:
    print(
        f"cores: {os.cpu_count()} (this process may use {len(os.sched_getaffinity(0))});"
        f" numpy {np.__version__}"
    )
    corpus = write_corpus(workdir / "corpus")
    contents = {f.name: f.path.read_bytes() for f in corpus.files}
    options = ChunkingOptions()
    texts = embedded_texts(corpus, options)
    model = MiniLMEmbedder.load()
    # The first passes allocate the model's buffers: not what a steady ingest pays.
    for name in texts:
        model.encode(texts[name])

    copies = math.ceil(args.pages / corpus.pdf_pages)
    print(
        f"corpus: {len(corpus.files)} files, {corpus.pdf_pages} PDF pages,"
        f" {sum(map(len, texts.values()))} chunks; {copies} copies"
    )
    service, direct = Totals(), Totals()
    knowledge = await KnowledgeBase.open(workdir / "knowledge.sqlite3", model, options)
    try:
        for copy in range(copies):
            ingested = await ingest_copy(knowledge, corpus, contents, copy)
            baseline = baseline_copy(corpus, contents, texts, model)
            for totals, part in ((service, ingested), (direct, baseline)):
                totals.seconds += part.seconds
                totals.pages += part.pages
                totals.chunks += part.chunks
        counts = await knowledge.counts()
    finally:
        await knowledge.close()
    assert counts.chunks == service.chunks == direct.chunks, (counts, service, direct)

    print(f"\n  {'':34}{'time':>10}{'pages/s':>10}{'chunks/s':>11}{'ratio':>9}")
    print(direct.line("direct: pypdf + MiniLM"))
    print(service.line("KnowledgeBase.ingest()", direct))
    print(
        f"\n{service.pages} PDF pages and {service.chunks} chunks in {counts.documents}"
        f" documents; knowledge base minus baseline:"
        f" {(service.seconds - direct.seconds) / service.chunks * 1000:+.1f} ms per chunk"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=300, help="PDF pages to ingest at least")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kitty-ingest-bench-") as workdir:
        asyncio.run(benchmark(args, Path(workdir)))


if __name__ == "__main__":
    main()
