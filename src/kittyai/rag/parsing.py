"""Documents to text with structure: pages, headings and paragraphs.

`parse_document` reads PDF (pypdf), Markdown, HTML and plain text and returns the
document's title and its text as blocks. A block is one paragraph, with the page it is
on (PDFs only) and the path of headings above it, outermost first. The chunker cuts
along these blocks, so every chunk can be cited by source, page and section.

PDFs carry no headings, only lines of text, so they are found by a heuristic. A line
is a heading when it is short (at most 80 characters and 10 words), has no final
period, comma, colon, semicolon or exclamation mark, and either

- is numbered: "3 Specifications", "3.2 Heatbed", "3.2. Heatbed"; its level is the
  count of numbers;
- or stands alone (first on its page, or after a line that ends a sentence or after a
  heading) and is in capitals ("SAFETY INSTRUCTIONS") or in Title Case ("Heatbed
  Levelling", small words like "of" may stay lower case), with no word starting with
  a digit: "Max Bed Temperature 120 °C" is a table row, not a heading.

Capitals rank just below the deepest numbered heading above them, Title Case just
below capitals; consecutive headings of one kind are siblings. Single-word
admonitions in capitals ("NOTE", "WARNING") are text. Lines repeated at the top or
bottom of most pages (running headers, footers, page numbers) are dropped before
anything else, so "Original Prusa MK4 Manual" on every page is not a heading each
time. The section path carries over page breaks.
"""

import codecs
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from html.parser import HTMLParser
import io
import logging
from pathlib import PurePath
import re
from typing import NamedTuple

from pypdf import PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError, PyPdfError

_LOGGER = logging.getLogger(__name__)

PDF = "application/pdf"
MARKDOWN = "text/markdown"
PLAIN_TEXT = "text/plain"
HTML = "text/html"
MEDIA_TYPE_BY_SUFFIX = {
    ".pdf": PDF,
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".txt": PLAIN_TEXT,
    ".html": HTML,
    ".htm": HTML,
}
# Other names servers and browsers give the same formats.
_MEDIA_TYPE_ALIASES = {
    "application/x-pdf": PDF,
    "text/x-markdown": MARKDOWN,
    "application/xhtml+xml": HTML,
}
_SUPPORTED = "PDF (.pdf), Markdown (.md, .markdown), plain text (.txt) and HTML (.html, .htm)"

_MAX_HEADING_CHARS = 80
_MAX_HEADING_WORDS = 10
_MAX_TITLE_CASE_WORDS = 8
# "ABS" is a heading when alone on its line; "OK" is not.
_MIN_CAPITALS = 3
_NUMBERED_HEADING = re.compile(r"(\d{1,2}(?:\.\d{1,2}){0,4})\.?\s+(\S.*)")
_HEADING_FORBIDDEN_ENDINGS = tuple(".,;:!")
_SENTENCE_ENDINGS = tuple(".!?:")
_ADMONITIONS = frozenset({"NOTE", "NOTICE", "WARNING", "CAUTION", "DANGER", "TIP", "IMPORTANT"})
_MINOR_WORDS = frozenset(
    {"a", "an", "and", "as", "at", "by", "for", "from", "in", "of", "on", "or", "the", "to", "vs"}
    | {"with", "via", "per", "into", "over", "under"}
)
# A line shorter than this share of the page's longest line ends its paragraph when it
# also ends a sentence: the short last line of a justified or ragged paragraph.
_SHORT_LINE_RATIO = 0.85
# Running headers and footers: among the first and last lines of a page, repeated
# (digits aside) on this share of the pages, in documents of at least this many pages.
_RUNNING_LINES = 2
_RUNNING_SHARE = 0.6
_RUNNING_MIN_PAGES = 3
# "3", "Page 3", "3 / 12", "- 3 -", "[3]".
_PAGE_NUMBER = re.compile(
    r"(?i)[-\u2013\u2014\s\[(]*(page\s*)?\d{1,4}(\s*(/|of)\s*\d{1,4})?[-\u2013\u2014\s\])]*"
)
_DIGITS = re.compile(r"\d+")

_ATX_HEADING = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_THEMATIC_BREAK = re.compile(r" {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_EMPHASIS = re.compile(r"(?<!\w)[*_`]+|[*_`]+(?!\w)")

# Elements whose text is not content: code, menus, templates.
_HTML_DROPPED = frozenset({"script", "style", "nav", "noscript", "template", "svg"})
_HTML_BLOCKS = frozenset(
    {"address", "article", "aside", "blockquote", "body", "dl", "div", "figcaption"}
    | {"figure", "footer", "form", "header", "hr", "main", "ol", "p", "pre", "section"}
    | {"table", "ul"}
)
_HTML_LINES = frozenset({"br", "dd", "dt", "li", "tr"})
_HTML_CELLS = frozenset({"td", "th"})
_HTML_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_WHITESPACE = re.compile(r"\s+")


class DocumentErrorCode(StrEnum):
    """Why a document cannot be ingested."""

    UNSUPPORTED_TYPE = "unsupported_type"
    CORRUPT_DOCUMENT = "corrupt_document"
    ENCRYPTED_DOCUMENT = "encrypted_document"
    EMPTY_DOCUMENT = "empty_document"
    TOO_LARGE = "too_large"


class DocumentError(Exception):
    """A document that cannot be read; the message names the file and what is wrong."""

    def __init__(self, code: DocumentErrorCode, message: str) -> None:
        """Describe the problem as `code` (for programs) and `message` (for people)."""
        super().__init__(message)
        self.code = code
        self.message = message


class TextBlock(NamedTuple):
    """One paragraph of a document, where it is."""

    # 1-based page of a PDF; None for documents without pages.
    page: int | None
    # The headings above the paragraph, outermost first.
    section: tuple[str, ...]
    text: str


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """A document's title and text, in reading order."""

    title: str
    media_type: str
    # PDFs have pages; other documents count as one.
    pages: int
    blocks: tuple[TextBlock, ...]


def detect_media_type(name: str, media_type: str | None) -> str:
    """Return the supported media type of a document, from `media_type` or the name's suffix.

    A media type that is not supported (such as a server's `application/octet-stream`)
    gives way to the suffix; parameters like `; charset=utf-8` are ignored.

    Raises:
        DocumentError: neither names a supported type (`unsupported_type`).
    """
    if media_type is not None:
        essence = media_type.partition(";")[0].strip().lower()
        essence = _MEDIA_TYPE_ALIASES.get(essence, essence)
        if essence in MEDIA_TYPE_BY_SUFFIX.values():
            return essence
    suffix = PurePath(name).suffix.lower()
    if suffix in MEDIA_TYPE_BY_SUFFIX:
        return MEDIA_TYPE_BY_SUFFIX[suffix]
    described = f" ({media_type})" if media_type else ""
    raise DocumentError(
        DocumentErrorCode.UNSUPPORTED_TYPE,
        f"{name}{described} is not a document KITTY reads; it reads {_SUPPORTED}",
    )


def parse_document(data: bytes, *, name: str, media_type: str | None) -> ParsedDocument:
    """Return the title and the blocks of text of a document.

    Blocks for CPU-bound work: call it in a worker thread.

    Args:
        data: the document's bytes.
        name: its file name, for the type (by suffix), the fallback title and messages.
        media_type: its media type if known, e.g. a server's Content-Type.

    Raises:
        DocumentError: the document is of an unsupported type, corrupt, encrypted or
            holds no text.
    """
    detected = detect_media_type(name, media_type)
    if not data:
        raise DocumentError(DocumentErrorCode.EMPTY_DOCUMENT, f"{name} is empty")
    stem = PurePath(name).stem or name
    if detected == PDF:
        document = _parse_pdf(data, name, stem)
    else:
        text = _decode(data, _charset(media_type))
        if detected == MARKDOWN:
            title, blocks = _parse_markdown(text)
        elif detected == HTML:
            title, blocks = _parse_html(text)
        else:
            title, blocks = None, list(_plain_blocks(text, page=None, section=()))
        document = ParsedDocument(
            title=title or stem, media_type=detected, pages=1, blocks=tuple(blocks)
        )
    if not document.blocks:
        raise DocumentError(DocumentErrorCode.EMPTY_DOCUMENT, f"{name} holds no text")
    return document


def _charset(media_type: str | None) -> str | None:
    if media_type is None:
        return None
    for parameter in media_type.split(";")[1:]:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"') or None
    return None


def _decode(data: bytes, charset: str | None) -> str:
    """Decode text: its BOM or declared charset, else UTF-8, else Windows-1252, else Latin-1."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace")
    candidates = [charset] if charset else []
    # utf-8-sig reads UTF-8 with and without a byte-order mark; cp1252 is what older
    # Windows editors save; Latin-1 maps every byte, so decoding always ends there.
    candidates += ["utf-8-sig", "cp1252", "latin-1"]
    for encoding in candidates:
        try:
            return data.decode(encoding).removeprefix("\ufeff")
        except LookupError, UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes any bytes")


def _plain_blocks(text: str, *, page: int | None, section: tuple[str, ...]) -> Iterator[TextBlock]:
    """Yield the paragraphs of plain text: runs of lines between blank lines."""
    for paragraph in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        lines = [line.strip() for line in paragraph.split("\n")]
        joined = "\n".join(line for line in lines if line)
        if joined:
            yield TextBlock(page, section, joined)


# --- PDF -----------------------------------------------------------------------------


class _HeadingStyle(StrEnum):
    NUMBERED = "numbered"
    CAPITALS = "capitals"
    TITLE_CASE = "title case"


@dataclass(slots=True)
class _OpenHeading:
    level: int
    style: _HeadingStyle
    text: str


class _SectionPath:
    """The headings above the current line of a PDF, with the levels the heuristic gives."""

    def __init__(self) -> None:
        self._stack: list[_OpenHeading] = []

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(heading.text for heading in self._stack)

    def enter(self, style: _HeadingStyle, text: str, numbered_level: int = 0) -> None:
        numbered_base = max(
            (h.level for h in self._stack if h.style is _HeadingStyle.NUMBERED), default=0
        )
        if style is _HeadingStyle.NUMBERED:
            level = numbered_level
        elif style is _HeadingStyle.CAPITALS:
            level = numbered_base + 1
        else:
            has_capitals = any(
                h.style is _HeadingStyle.CAPITALS and h.level == numbered_base + 1
                for h in self._stack
            )
            level = numbered_base + (2 if has_capitals else 1)
        while self._stack and self._stack[-1].level >= level:
            self._stack.pop()
        self._stack.append(_OpenHeading(level, style, text))


def _parse_pdf(data: bytes, name: str, stem: str) -> ParsedDocument:
    pages, title = _read_pdf(data, name)
    page_lines = [
        [" ".join(line.split()) for line in text.splitlines() if line.strip()] for text in pages
    ]
    running = _running_lines(page_lines)
    section = _SectionPath()
    blocks: list[TextBlock] = []
    for number, lines in enumerate(page_lines, start=1):
        edges = _edge_indices(len(lines))
        kept = [
            line
            for index, line in enumerate(lines)
            if not (index in edges and (_running_key(line) in running or _is_page_number(line)))
        ]
        blocks.extend(_pdf_page_blocks(kept, number, section))
    if not blocks:
        raise DocumentError(
            DocumentErrorCode.EMPTY_DOCUMENT,
            f"{name} has no text to read: it may be a scan (pages as images); "
            "KITTY reads PDFs with a text layer only",
        )
    return ParsedDocument(
        title=title or stem, media_type=PDF, pages=len(pages), blocks=tuple(blocks)
    )


def _read_pdf(data: bytes, name: str) -> tuple[list[str], str | None]:
    """Return the text of each page and the title, trying the empty password on encryption."""
    try:
        reader = PdfReader(io.BytesIO(data))
        # Many "protected" PDFs only restrict printing or copying: they open with the
        # empty user password.
        opened = not reader.is_encrypted or bool(reader.decrypt(""))
        pages = [page.extract_text() for page in reader.pages] if opened else None
    except (DependencyError, FileNotDecryptedError) as err:
        raise DocumentError(
            DocumentErrorCode.ENCRYPTED_DOCUMENT,
            f"{name} is encrypted and cannot be opened here ({err}); save it unencrypted",
        ) from err
    except PyPdfError as err:
        raise DocumentError(
            DocumentErrorCode.CORRUPT_DOCUMENT, f"{name} is not a readable PDF: {err}"
        ) from err
    # pypdf meets broken files with whatever its parser hits first (a KeyError for a
    # missing entry, a TypeError for an object of the wrong kind, ...): any of them
    # means the same for the user.
    except Exception as err:
        raise DocumentError(
            DocumentErrorCode.CORRUPT_DOCUMENT,
            f"{name} is a damaged PDF: {type(err).__name__}: {err}",
        ) from err
    if pages is None:
        raise DocumentError(
            DocumentErrorCode.ENCRYPTED_DOCUMENT,
            f"{name} is encrypted with a password; save it without one to ingest it",
        )
    return pages, _pdf_title(reader)


def _pdf_title(reader: PdfReader) -> str | None:
    try:
        metadata = reader.metadata
        title = metadata.title if metadata is not None else None
    # A title is a nicety: a file whose text reads but whose metadata does not keeps
    # its file name.
    except Exception:
        _LOGGER.debug("Unreadable PDF metadata", exc_info=True)
        return None
    if not isinstance(title, str):
        return None
    title = " ".join(title.split())
    # PDF writers' placeholders say nothing about the document.
    if not title or title.lower() in {"untitled", "unknown", "title"}:
        return None
    return title


def _edge_indices(count: int) -> set[int]:
    """Return the positions of a page's first and last lines, where headers and footers are."""
    return set(range(min(_RUNNING_LINES, count))) | set(
        range(max(0, count - _RUNNING_LINES), count)
    )


def _running_key(line: str) -> str:
    # Page numbers differ from page to page; the rest of a running line does not.
    return _DIGITS.sub("#", line.lower())


def _running_lines(page_lines: list[list[str]]) -> set[str]:
    """Return the keys of lines at the top or bottom of most pages: headers and footers."""
    if len(page_lines) < _RUNNING_MIN_PAGES:
        return set()
    seen: Counter[str] = Counter()
    for lines in page_lines:
        seen.update({_running_key(lines[index]) for index in _edge_indices(len(lines))})
    return {key for key, pages in seen.items() if pages >= _RUNNING_SHARE * len(page_lines)}


def _is_page_number(line: str) -> bool:
    return _PAGE_NUMBER.fullmatch(line) is not None


def _pdf_page_blocks(lines: list[str], page: int, section: _SectionPath) -> Iterator[TextBlock]:
    """Yield the paragraphs of one page, moving `section` along the headings on it."""
    longest = max((len(line) for line in lines), default=0)
    paragraph: list[str] = []
    previous_ends_sentence = True

    def flush() -> Iterator[TextBlock]:
        if paragraph:
            yield TextBlock(page, section.path, _join_lines(paragraph))
            paragraph.clear()

    for line in lines:
        heading = _pdf_heading(line, stands_alone=previous_ends_sentence)
        if heading is not None:
            yield from flush()
            style, level = heading
            section.enter(style, line, level)
            previous_ends_sentence = True
            continue
        paragraph.append(line)
        previous_ends_sentence = line.endswith(_SENTENCE_ENDINGS)
        if previous_ends_sentence and len(line) < _SHORT_LINE_RATIO * longest:
            yield from flush()
    yield from flush()


def _pdf_heading(line: str, *, stands_alone: bool) -> tuple[_HeadingStyle, int] | None:
    """Return the style and the level (numbered ones; else 0) of a heading line; None for text."""
    words = line.split()
    if (
        len(line) > _MAX_HEADING_CHARS
        or len(words) > _MAX_HEADING_WORDS
        or line.endswith(_HEADING_FORBIDDEN_ENDINGS)
        or not any(character.isalpha() for character in line)
    ):
        return None
    if numbered := _NUMBERED_HEADING.fullmatch(line):
        # "3 Specifications" and "4.2 Z offset", not "4 M3 screws", "2 x" or "3 X".
        title_words = numbered.group(2).split()
        first_word = title_words[0]
        if (
            first_word.isalpha()
            and first_word[0].isupper()
            and (len(first_word) > 1 or len(title_words) > 1)
        ):
            return _HeadingStyle.NUMBERED, numbered.group(1).count(".") + 1
        return None
    if not stands_alone or any(not word[0].isalpha() and word[0] not in "(&-" for word in words):
        return None
    style = _unnumbered_style(line, words)
    return None if style is None else (style, 0)


def _unnumbered_style(line: str, words: list[str]) -> _HeadingStyle | None:
    letters = [character for character in line if character.isalpha()]
    if all(character.isupper() for character in letters):
        if len(letters) >= _MIN_CAPITALS and line not in _ADMONITIONS:
            return _HeadingStyle.CAPITALS
        return None
    significant = [word for word in words if word[0].isalpha() and word not in _MINOR_WORDS]
    if (
        len(words) <= _MAX_TITLE_CASE_WORDS
        and words[0][0].isupper()
        and all(word[0].isupper() for word in significant)
    ):
        return _HeadingStyle.TITLE_CASE
    return None


def _join_lines(lines: list[str]) -> str:
    """Join a paragraph's lines, undoing hyphenation where a word was split across them."""
    text = lines[0]
    for line in lines[1:]:
        if text.endswith("-") and len(text) > 1 and text[-2].isalpha():
            # "tempera-" + "ture" was one word; "E3D-" + "V6" is a name with its hyphen.
            text = text[:-1] + line if line[0].islower() else text + line
        else:
            text = f"{text} {line}"
    return text


# --- Markdown ------------------------------------------------------------------------


def _parse_markdown(text: str) -> tuple[str | None, list[TextBlock]]:
    """Return the first H1 and the paragraphs, with ATX headings as the section path."""
    headings: list[tuple[int, str]] = []
    title: str | None = None
    blocks: list[TextBlock] = []
    paragraph: list[str] = []
    fence: str | None = None

    def section() -> tuple[str, ...]:
        return tuple(heading for _, heading in headings)

    def flush() -> None:
        if paragraph:
            blocks.append(TextBlock(None, section(), "\n".join(paragraph)))
            paragraph.clear()

    for raw_line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw_line.rstrip()
        if fence is not None:
            # Code is kept as it is, blank lines and '#' comments included.
            paragraph.append(line)
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = None
                flush()
            continue
        if opening := _FENCE.match(line):
            flush()
            fence = opening.group(1)
            paragraph.append(line.strip())
            continue
        if heading := _ATX_HEADING.fullmatch(line):
            flush()
            level = len(heading.group(1))
            words = _inline_text(heading.group(2) or "")
            while headings and headings[-1][0] >= level:
                headings.pop()
            if words:
                headings.append((level, words))
                if level == 1 and title is None:
                    title = words
            continue
        if not line.strip() or _THEMATIC_BREAK.fullmatch(line):
            flush()
            continue
        paragraph.append(line.strip())
    flush()
    return title, blocks


def _inline_text(markdown: str) -> str:
    """Return a heading's words without link targets and emphasis marks."""
    text = _LINK.sub(r"\1", markdown)
    return " ".join(_EMPHASIS.sub("", text).split())


# --- HTML ----------------------------------------------------------------------------


class _HtmlText(HTMLParser):
    """Collects an HTML page's title and paragraphs, h1-h6 making the section path."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title: str | None = None
        self.first_heading: str | None = None
        self.blocks: list[TextBlock] = []
        self._headings: list[tuple[int, str]] = []
        self._paragraph: list[str] = []
        self._heading_level: int | None = None
        self._heading_text: list[str] = []
        self._title_text: list[str] | None = None
        self._dropped_depth = 0
        self._pre_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HTML_DROPPED:
            self._dropped_depth += 1
        elif self._dropped_depth:
            return
        elif tag == "title":
            self._title_text = []
        elif tag in _HTML_HEADINGS:
            self._flush()
            self._heading_level = _HTML_HEADINGS[tag]
            self._heading_text = []
        else:
            self._break(tag)
            if tag == "pre":
                self._pre_depth += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <br/> and <hr/> break lines like <br> and <hr>; they never open an element.
        if not self._dropped_depth:
            self._break(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HTML_DROPPED:
            self._dropped_depth = max(0, self._dropped_depth - 1)
        elif self._dropped_depth:
            return
        elif tag == "title" and self._title_text is not None:
            self.title = " ".join("".join(self._title_text).split()) or None
            self._title_text = None
        elif tag in _HTML_HEADINGS and self._heading_level is not None:
            self._end_heading()
        else:
            self._break(tag)
            if tag == "pre":
                self._pre_depth = max(0, self._pre_depth - 1)

    def handle_data(self, data: str) -> None:
        if self._dropped_depth:
            return
        if self._title_text is not None:
            self._title_text.append(data)
        elif self._heading_level is not None:
            self._heading_text.append(data)
        elif self._pre_depth:
            self._paragraph.append(data)
        else:
            self._paragraph.append(_WHITESPACE.sub(" ", data))

    def close(self) -> None:
        super().close()
        if self._heading_level is not None:
            self._end_heading()
        self._flush()

    def _break(self, tag: str) -> None:
        if tag in _HTML_BLOCKS:
            self._flush()
        elif tag in _HTML_LINES:
            self._paragraph.append("\n")
        elif tag in _HTML_CELLS:
            self._paragraph.append(" ")

    def _end_heading(self) -> None:
        level = self._heading_level
        text = " ".join("".join(self._heading_text).split())
        self._heading_level = None
        while self._headings and level is not None and self._headings[-1][0] >= level:
            self._headings.pop()
        if text and level is not None:
            self._headings.append((level, text))
            if self.first_heading is None and level == 1:
                self.first_heading = text

    def _flush(self) -> None:
        text = "".join(self._paragraph)
        self._paragraph.clear()
        lines = (line.strip() for line in text.split("\n"))
        joined = "\n".join(line for line in lines if line)
        if joined:
            section = tuple(heading for _, heading in self._headings)
            self.blocks.append(TextBlock(None, section, joined))


def _parse_html(text: str) -> tuple[str | None, list[TextBlock]]:
    parser = _HtmlText()
    parser.feed(text)
    parser.close()
    return parser.title or parser.first_heading, parser.blocks
