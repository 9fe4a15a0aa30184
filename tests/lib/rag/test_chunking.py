"""Chunks along pages and headings, sized in MiniLM word pieces, overlapping within a section."""

from collections import defaultdict
from itertools import pairwise
from pathlib import Path
import time

import pytest

from kittyai.embedding import EmbeddingModelError
from kittyai.rag.chunking import (
    ChunkDraft,
    WordEstimateCounter,
    WordPieceCounter,
    chunk_document,
    default_token_counter,
)
from kittyai.rag.options import ChunkingOptions
from kittyai.rag.parsing import ParsedDocument, TextBlock, parse_document

type SectionKey = tuple[int | None, tuple[str, ...]]

OPTIONS = ChunkingOptions()
SUBJECTS = ("heatbed", "nozzle", "extruder", "belt", "fan", "sheet", "thermistor", "frame")


@pytest.fixture(scope="module")
def counter() -> WordPieceCounter:
    return WordPieceCounter.load()


def sentence(section: int, number: int) -> str:
    subject = SUBJECTS[(section + number) % len(SUBJECTS)]
    return (
        f"Step {number} of part {section} checks the {subject} and writes the reading, "
        f"about {number * 7 % 90} units, into the maintenance log."
    )


def paragraph(section: int, first: int, sentences: int) -> str:
    return " ".join(sentence(section, number) for number in range(first, first + sentences))


def manual(sections: list[tuple[int | None, tuple[str, ...], list[int]]]) -> ParsedDocument:
    """Return a document of sections given as (page, heading path, sentences per paragraph)."""
    blocks = []
    for index, (page, path, paragraphs) in enumerate(sections):
        first = 0
        for sentences in paragraphs:
            blocks.append(TextBlock(page, path, paragraph(index, first, sentences)))
            first += sentences
    return ParsedDocument(
        title="Maintenance", media_type="application/pdf", pages=3, blocks=tuple(blocks)
    )


LONG_MANUAL = manual(
    [
        (1, ("1 Care",), [6, 9, 4, 12, 7]),
        (1, ("1 Care", "1.1 Daily"), [3]),
        (2, ("1 Care", "1.1 Daily"), [10, 10, 10, 10, 10]),
        (2, ("1 Care", "1.2 Weekly"), [25]),
        (3, ("2 Repairs",), [8, 2, 14, 5, 9, 3, 11]),
    ]
)


def group_texts(document: ParsedDocument) -> dict[SectionKey, str]:
    groups: defaultdict[SectionKey, list[str]] = defaultdict(list)
    for block in document.blocks:
        groups[block.page, block.section].append(block.text)
    return {key: "\n\n".join(texts) for key, texts in groups.items()}


def by_section(
    chunks: list[ChunkDraft],
) -> dict[SectionKey, list[ChunkDraft]]:
    sections: defaultdict[SectionKey, list[ChunkDraft]] = defaultdict(list)
    for chunk in chunks:
        sections[chunk.page, chunk.section].append(chunk)
    return sections


def test_a_chunk_never_spans_two_pages_or_sections(counter: WordPieceCounter) -> None:
    chunks = chunk_document(LONG_MANUAL, OPTIONS, counter)

    texts = group_texts(LONG_MANUAL)
    assert set(by_section(chunks)) == set(texts)
    for chunk in chunks:
        # Its text is a piece of its own page's section, as written.
        assert chunk.text in texts[chunk.page, chunk.section]
    assert [chunk.ordinal for chunk in chunks] == list(range(len(chunks)))


def test_sizes_stay_between_min_and_max_near_the_target(counter: WordPieceCounter) -> None:
    chunks = chunk_document(LONG_MANUAL, OPTIONS, counter)

    for section in by_section(chunks).values():
        for chunk in section:
            assert chunk.tokens <= OPTIONS.max_tokens
        # Only a section's last chunk may be short.
        for chunk in section[:-1]:
            assert chunk.tokens >= OPTIONS.min_tokens
    full = [chunk.tokens for section in by_section(chunks).values() for chunk in section[:-1]]
    assert abs(sum(full) / len(full) - OPTIONS.target_tokens) < 50


def test_token_counts_are_minilm_word_pieces(counter: WordPieceCounter) -> None:
    chunks = chunk_document(LONG_MANUAL, OPTIONS, counter)

    assert [chunk.tokens for chunk in chunks] == counter.count([chunk.text for chunk in chunks])


def test_sentences_are_kept_whole(counter: WordPieceCounter) -> None:
    chunks = chunk_document(LONG_MANUAL, OPTIONS, counter)

    for chunk in chunks:
        assert chunk.text.endswith("maintenance log.")


def test_overlap_repeats_the_end_of_the_previous_chunk_of_the_section(
    counter: WordPieceCounter,
) -> None:
    chunks = chunk_document(LONG_MANUAL, OPTIONS, counter)

    overlapping = 0
    for section in by_section(chunks).values():
        first_sentence = section[0].text.split(". ")[0]
        assert first_sentence.startswith("Step 0 ")
        for previous, chunk in pairwise(section):
            # The longest start of this chunk that ends the previous one.
            shared = max(
                (
                    size
                    for size in range(1, len(chunk.text))
                    if previous.text.endswith(chunk.text[:size])
                ),
                default=0,
            )
            assert shared > 0
            [overlap_tokens] = counter.count([chunk.text[:shared]])
            assert overlap_tokens <= OPTIONS.overlap_tokens
            overlapping += 1
    assert overlapping >= 5


def test_no_overlap_across_sections(counter: WordPieceCounter) -> None:
    chunks = chunk_document(LONG_MANUAL, OPTIONS, counter)

    for section in by_section(chunks).values():
        # "Step 0" opens every section; no sentence of the section before comes first.
        assert section[0].text.startswith("Step 0 ")


def test_a_short_section_stays_its_own_chunk(counter: WordPieceCounter) -> None:
    chunks = chunk_document(LONG_MANUAL, OPTIONS, counter)

    [daily_page_1] = by_section(chunks)[1, ("1 Care", "1.1 Daily")]
    assert daily_page_1.tokens < OPTIONS.min_tokens
    assert daily_page_1.text == paragraph(1, 0, 3)


def test_paragraphs_are_kept_whole_where_they_fit(counter: WordPieceCounter) -> None:
    document = manual([(None, ("Notes",), [4, 4, 4, 4, 4, 4, 4, 4])])

    chunks = chunk_document(document, OPTIONS, counter)

    paragraphs = [block.text for block in document.blocks]
    for chunk in chunks:
        pieces = chunk.text.split("\n\n")
        # Every paragraph boundary inside a chunk is a real one, and the chunk ends
        # with a whole paragraph (the first piece may be overlap from the one before).
        for piece in pieces[1:]:
            assert piece in paragraphs
    assert len(chunks) > 1


def test_a_sentence_longer_than_a_chunk_is_cut_between_words(counter: WordPieceCounter) -> None:
    run_on = " ".join(f"bolt{number} torque {number % 9} Nm" for number in range(400))
    document = ParsedDocument("Torques", "text/plain", 1, (TextBlock(None, (), run_on),))

    chunks = chunk_document(document, OPTIONS, counter)

    assert len(chunks) > 2
    for chunk in chunks:
        assert chunk.tokens <= OPTIONS.max_tokens
        assert chunk.text in run_on
        # Cut between words: every chunk starts and ends with a whole one.
        assert chunk.text.split()[-1] in run_on.split()
        assert chunk.text.split()[0] in run_on.split()
    assert chunks[-1].text.endswith("bolt399 torque 3 Nm")


def test_code_keeps_its_lines(counter: WordPieceCounter) -> None:
    markdown = b"# Firmware\n\n```gcode\nM104 S215 ; nozzle\nM140 S60 ; bed\n\nG28 ; home\n```\n"
    document = parse_document(markdown, name="start.md", media_type=None)

    [chunk] = chunk_document(document, OPTIONS, counter)

    assert chunk.text == "```gcode\nM104 S215 ; nozzle\nM140 S60 ; bed\n\nG28 ; home\n```"
    assert chunk.section == ("Firmware",)


def test_chunk_pages_follow_the_pdf_pages(counter: WordPieceCounter) -> None:
    chunks = chunk_document(LONG_MANUAL, OPTIONS, counter)

    assert {chunk.page for chunk in chunks} == {1, 2, 3}
    pages = [chunk.page for chunk in chunks]
    assert pages == sorted(pages)


def test_default_counter_is_minilms_own() -> None:
    counter = default_token_counter()

    assert isinstance(counter, WordPieceCounter)
    # To BERT, "E3D-V6" is e ##3d - v6 and "the heatbed" the heat ##bed.
    assert counter.count(["E3D-V6", "the heatbed"]) == [4, 3]


def test_counter_without_the_model_files_says_so(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingModelError, match="tokenizer"):
        WordPieceCounter.load(tmp_path)


def test_word_estimate_is_close_to_the_tokenizer(counter: WordPieceCounter) -> None:
    texts = [block.text for block in LONG_MANUAL.blocks]
    texts.append(
        "The printer ships with the E3D-V6 hotend (PN-2045-B) and a 24 V, 40 W heater "
        "cartridge; replace the M6 nozzle every 500 hours of printing."
    )

    estimated = sum(WordEstimateCounter().count(texts))
    exact = sum(counter.count(texts))

    assert 0.8 < estimated / exact < 1.2


def test_word_estimate_chunks_within_limits() -> None:
    chunks = chunk_document(LONG_MANUAL, OPTIONS, WordEstimateCounter())

    assert all(chunk.tokens <= OPTIONS.max_tokens for chunk in chunks)
    assert {(chunk.page, chunk.section) for chunk in chunks} == set(group_texts(LONG_MANUAL))


def test_chunking_a_long_manual_is_quick(counter: WordPieceCounter) -> None:
    # About 300 pages of 400 words.
    sections = [(page, (f"{page} Section",), [8, 8, 8, 8]) for page in range(1, 301)]
    document = manual(sections)

    started = time.perf_counter()
    chunks = chunk_document(document, OPTIONS, counter)
    elapsed = time.perf_counter() - started

    assert len(chunks) >= 300
    # Embedding these chunks takes minutes; cutting them must not add noticeably.
    assert elapsed < 3.0
