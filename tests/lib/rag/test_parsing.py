"""Documents to titled, paged, sectioned text: PDFs made with reportlab, Markdown, HTML, text."""

import io

from pypdf import PdfWriter
import pytest
from reportlab.lib.pagesizes import A4
from reportlab.lib.pdfencrypt import StandardEncryption
from reportlab.pdfgen.canvas import Canvas

from kittyai.rag.parsing import (
    DocumentError,
    DocumentErrorCode,
    ParsedDocument,
    TextBlock,
    detect_media_type,
    parse_document,
)

MANUAL_PAGES = [
    [
        "1 Introduction",
        "This handbook explains how to set up and maintain the printer. Keep it",
        "next to the machine.",
        "SAFETY INSTRUCTIONS",
        "Never touch the nozzle while the printer is heating up.",
    ],
    [
        "2 Specifications",
        "2.1 Heatbed",
        "The heatbed reaches a maximum temperature of 120 °C. The steel sheet is",
        "removable.",
        "2.2 Hotend",
        "The printer ships with the E3D-V6 hotend. Its heater needs a tempera-",
        "ture sensor in good condition.",
    ],
    [
        "The hotend accepts nozzles from 0.25 to 0.8 mm. Replace a worn nozzle",
        "every 500 hours of printing.",
        "Cleaning The Nozzle",
        "Heat the nozzle to 250 °C before you wipe it with a brass brush.",
    ],
]
RUNNING_HEADER = "Original Prusa MK4 Handbook"


def pdf(
    pages: list[list[str]],
    *,
    title: str | None = "Prusa MK4 Handbook",
    encrypt: StandardEncryption | None = None,
    running_lines: bool = True,
) -> bytes:
    """Return a PDF drawing `pages`' lines top down, with a running header and page footer."""
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=A4, invariant=True, encrypt=encrypt)
    if title is not None:
        canvas.setTitle(title)
    for number, lines in enumerate(pages, start=1):
        framed = [RUNNING_HEADER, *lines, f"Page {number} of {len(pages)}"]
        y = 800.0
        for line in framed if running_lines else lines:
            canvas.drawString(72, y, line)
            y -= 16
        canvas.showPage()
    canvas.save()
    return buffer.getvalue()


def block_with(document: ParsedDocument, words: str) -> TextBlock:
    [block] = [block for block in document.blocks if words in block.text]
    return block


def test_pdf_facts_keep_their_page_and_section() -> None:
    document = parse_document(pdf(MANUAL_PAGES), name="mk4.pdf", media_type=None)

    assert document.title == "Prusa MK4 Handbook"
    assert document.media_type == "application/pdf"
    assert document.pages == 3
    heatbed = block_with(document, "120 °C")
    assert heatbed.page == 2
    assert heatbed.section == ("2 Specifications", "2.1 Heatbed")
    # A paragraph wrapped over two lines is one block again.
    assert heatbed.text == (
        "The heatbed reaches a maximum temperature of 120 °C. The steel sheet is removable."
    )
    safety = block_with(document, "Never touch")
    assert safety.section == ("1 Introduction", "SAFETY INSTRUCTIONS")
    # Page 3 starts without a heading: it is still in the hotend section.
    nozzles = block_with(document, "0.25 to 0.8 mm")
    assert nozzles.page == 3
    assert nozzles.section == ("2 Specifications", "2.2 Hotend")
    cleaning = block_with(document, "brass brush")
    assert cleaning.section == ("2 Specifications", "2.2 Hotend", "Cleaning The Nozzle")


def test_pdf_rejoins_hyphenated_words_and_keeps_hyphenated_names() -> None:
    document = parse_document(pdf(MANUAL_PAGES), name="mk4.pdf", media_type=None)

    hotend = block_with(document, "E3D-V6")
    assert "temperature sensor" in hotend.text
    assert "E3D-V6 hotend" in hotend.text


def test_pdf_running_headers_and_page_numbers_are_dropped() -> None:
    document = parse_document(pdf(MANUAL_PAGES), name="mk4.pdf", media_type=None)

    text = "\n".join(block.text for block in document.blocks)
    assert RUNNING_HEADER not in text
    assert "Page 2 of 3" not in text
    # Nor is the header taken for a heading on every page.
    assert all(RUNNING_HEADER not in block.section for block in document.blocks)


def test_pdf_table_rows_admonitions_and_counts_are_not_headings() -> None:
    pages = [
        [
            "3 Package contents",
            "Check the box before you start.",
            "4 M3 screws",
            "Max Bed Temperature 120 °C",
            "WARNING",
            "Unplug the printer before opening the electronics box.",
        ]
    ]
    document = parse_document(pdf(pages, running_lines=False), name="box.pdf", media_type=None)

    assert {block.section for block in document.blocks} == {("3 Package contents",)}
    text = "\n".join(block.text for block in document.blocks)
    for line in ("4 M3 screws", "Max Bed Temperature 120 °C", "WARNING"):
        assert line in text


def test_pdf_numbered_heading_may_start_with_a_one_letter_word() -> None:
    pages = [
        [
            "4 Calibration",
            "Level the bed first.",
            "4.2 Z offset",
            "Lower the nozzle until a sheet of paper drags.",
            "2 x",
            "Spare nozzles come in pairs.",
        ]
    ]
    document = parse_document(pdf(pages, running_lines=False), name="ender.pdf", media_type=None)

    z_offset = block_with(document, "sheet of paper")
    assert z_offset.section == ("4 Calibration", "4.2 Z offset")
    # A count is no heading, however short.
    assert block_with(document, "Spare nozzles").section == ("4 Calibration", "4.2 Z offset")


def test_pdf_without_a_title_is_named_after_its_file() -> None:
    # reportlab writes "untitled" when no title is set: that is no title.
    document = parse_document(pdf(MANUAL_PAGES, title=None), name="mk4-2026.pdf", media_type=None)

    assert document.title == "mk4-2026"


def test_encrypted_pdf_is_refused_with_its_name() -> None:
    data = pdf(MANUAL_PAGES, encrypt=StandardEncryption("secret", strength=128))

    with pytest.raises(DocumentError) as caught:
        parse_document(data, name="service.pdf", media_type=None)

    assert caught.value.code is DocumentErrorCode.ENCRYPTED_DOCUMENT
    assert "service.pdf is encrypted" in caught.value.message


def test_aes_encrypted_pdf_is_refused() -> None:
    writer = PdfWriter(clone_from=io.BytesIO(pdf(MANUAL_PAGES)))
    writer.encrypt("secret", algorithm="AES-256")
    buffer = io.BytesIO()
    writer.write(buffer)

    with pytest.raises(DocumentError) as caught:
        parse_document(buffer.getvalue(), name="aes.pdf", media_type=None)

    assert caught.value.code is DocumentErrorCode.ENCRYPTED_DOCUMENT


def test_pdf_protected_only_against_editing_is_read() -> None:
    # An owner password restricts printing or copying; the empty user password opens it.
    data = pdf(MANUAL_PAGES, encrypt=StandardEncryption("", ownerPassword="owner", canModify=0))

    document = parse_document(data, name="protected.pdf", media_type=None)

    assert block_with(document, "120 °C").page == 2


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(pdf(MANUAL_PAGES)[:1200], id="truncated"),
        pytest.param(b"%PDF-1.7\n" + bytes(range(256)) * 8, id="garbage"),
        pytest.param(b"not a pdf at all", id="text"),
    ],
)
def test_damaged_pdf_is_corrupt(data: bytes) -> None:
    with pytest.raises(DocumentError) as caught:
        parse_document(data, name="broken.pdf", media_type=None)

    assert caught.value.code is DocumentErrorCode.CORRUPT_DOCUMENT
    assert "broken.pdf" in caught.value.message


def test_pdf_without_text_may_be_a_scan() -> None:
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=A4, invariant=True)
    canvas.rect(72, 400, 300, 200, fill=1)
    canvas.showPage()
    canvas.save()

    with pytest.raises(DocumentError) as caught:
        parse_document(buffer.getvalue(), name="scan.pdf", media_type=None)

    assert caught.value.code is DocumentErrorCode.EMPTY_DOCUMENT
    assert "scan" in caught.value.message


MARKDOWN = """\
# Drone build

The frame is a 5 inch carbon frame.

## Frame

### Motor mounts

Motor mounts need 3 mm heat-set inserts.

```python
# thrust per motor, not a heading
thrust = 4 * 450

print(thrust)
```

## [Wiring](https://example.invalid/wiring) *notes* ##

- red to +
- black to -

---

## Frame

A second Frame section after Wiring.
"""


def test_markdown_headings_build_the_section_path() -> None:
    document = parse_document(MARKDOWN.encode(), name="drone.md", media_type=None)

    assert document.title == "Drone build"
    assert document.media_type == "text/markdown"
    assert document.pages == 1
    assert block_with(document, "5 inch").section == ("Drone build",)
    inserts = block_with(document, "heat-set inserts")
    assert inserts.section == ("Drone build", "Frame", "Motor mounts")
    assert inserts.page is None
    assert block_with(document, "red to +").section == ("Drone build", "Wiring notes")
    assert block_with(document, "red to +").text == "- red to +\n- black to -"
    assert block_with(document, "second Frame").section == ("Drone build", "Frame")


def test_markdown_code_fences_stay_text() -> None:
    document = parse_document(MARKDOWN.encode(), name="drone.md", media_type=None)

    code = block_with(document, "thrust = 4 * 450")
    assert code.text.startswith("```python\n# thrust per motor, not a heading\n")
    # The blank line inside the code does not cut it in two.
    assert "\n\nprint(thrust)\n```" in code.text
    assert code.section == ("Drone build", "Frame", "Motor mounts")


def test_markdown_without_h1_is_named_after_its_file() -> None:
    document = parse_document(b"## Notes\n\nBuy more PLA.\n", name="todo.markdown", media_type=None)

    assert document.title == "todo"
    assert document.blocks == (TextBlock(None, ("Notes",), "Buy more PLA."),)


HTML = """\
<!doctype html>
<html><head>
<title>Laser cutter - workshop wiki</title>
<style>p { color: red; }</style>
<script>var menu = "<p>Buy now</p>";</script>
</head>
<body>
<nav><a href="/">Home</a> <a href="/tools">Tools</a></nav>
<h1>Laser cutter</h1>
<p>The laser   cutter has a
   40 W CO<sub>2</sub> tube.</p>
<h2>Safety</h2>
<ul><li>Wear the orange goggles</li><li>Turn on the extraction fan</li></ul>
<h3>Fire</h3>
<p>Keep the CO<sub>2</sub> extinguisher&nbsp;next to the machine &amp; check it monthly.</p>
<h2>Materials</h2>
<pre>acrylic   3 mm   speed 12
plywood   4 mm   speed 8</pre>
<script>trackVisit();</script>
</body></html>
"""


def test_html_headings_build_the_section_path_and_chrome_is_dropped() -> None:
    document = parse_document(HTML.encode(), name="laser.html", media_type=None)

    assert document.title == "Laser cutter - workshop wiki"
    assert document.media_type == "text/html"
    text = "\n".join(block.text for block in document.blocks)
    for chrome in ("Home", "Tools", "Buy now", "color: red", "trackVisit"):
        assert chrome not in text
    assert block_with(document, "40 W").text == "The laser cutter has a 40 W CO2 tube."
    assert block_with(document, "40 W").section == ("Laser cutter",)
    goggles = block_with(document, "goggles")
    assert goggles.section == ("Laser cutter", "Safety")
    assert goggles.text == "Wear the orange goggles\nTurn on the extraction fan"
    fire = block_with(document, "extinguisher")
    assert fire.section == ("Laser cutter", "Safety", "Fire")
    assert fire.text == "Keep the CO2 extinguisher next to the machine & check it monthly."
    table = block_with(document, "acrylic")
    assert table.section == ("Laser cutter", "Materials")
    assert "acrylic   3 mm   speed 12\nplywood" in table.text


def test_html_without_title_takes_its_first_h1() -> None:
    document = parse_document(
        b"<h1>Bandsaw</h1><p>Blade: 1712 mm.</p>", name="saw.htm", media_type=None
    )

    assert document.title == "Bandsaw"


def test_plain_text_is_one_section_of_paragraphs() -> None:
    text = b"Fire plan\n\nThe extinguisher hangs by the door.\nCheck it monthly.\n\n\nExit left.\n"

    document = parse_document(text, name="fire plan.txt", media_type=None)

    assert document.title == "fire plan"
    assert document.blocks == (
        TextBlock(None, (), "Fire plan"),
        TextBlock(None, (), "The extinguisher hangs by the door.\nCheck it monthly."),
        TextBlock(None, (), "Exit left."),
    )


@pytest.mark.parametrize(
    ("data", "media_type"),
    [
        pytest.param("Löten bei 350 °C".encode(), None, id="utf-8"),
        pytest.param(b"\xef\xbb\xbf" + "Löten bei 350 °C".encode(), None, id="utf-8 with BOM"),
        pytest.param("Löten bei 350 °C".encode("cp1252"), None, id="windows-1252"),
        pytest.param("Löten bei 350 °C".encode("utf-16"), None, id="utf-16 with BOM"),
        pytest.param(
            "Löten bei 350 °C".encode("iso-8859-15"),
            "text/plain; charset=iso-8859-15",
            id="declared charset",
        ),
    ],
)
def test_text_is_decoded_whatever_the_editor_saved(data: bytes, media_type: str | None) -> None:
    document = parse_document(data, name="solder.txt", media_type=media_type)

    assert document.blocks[0].text == "Löten bei 350 °C"


def test_media_type_wins_over_the_name() -> None:
    document = parse_document(b"# Wiki\n\ntext", name="page", media_type="text/markdown")

    assert document.media_type == "text/markdown"
    assert document.title == "Wiki"


def test_generic_media_type_gives_way_to_the_suffix() -> None:
    assert detect_media_type("mk4.PDF", "application/octet-stream") == "application/pdf"
    assert detect_media_type("page", "text/html; charset=utf-8") == "text/html"
    assert detect_media_type("notes.md", None) == "text/markdown"


def test_unsupported_type_lists_what_is_supported() -> None:
    with pytest.raises(DocumentError) as caught:
        parse_document(b"PK\x03\x04", name="manual.docx", media_type=None)

    assert caught.value.code is DocumentErrorCode.UNSUPPORTED_TYPE
    assert caught.value.message.startswith("manual.docx is not a document")
    for supported in ("PDF", "Markdown", "plain text", "HTML"):
        assert supported in caught.value.message


@pytest.mark.parametrize(
    ("data", "name"),
    [(b"", "empty.pdf"), (b"", "empty.md"), (b" \n\n \t\n", "blank.txt"), (b"<p> </p>", "x.html")],
)
def test_documents_without_text_are_empty(data: bytes, name: str) -> None:
    with pytest.raises(DocumentError) as caught:
        parse_document(data, name=name, media_type=None)

    assert caught.value.code is DocumentErrorCode.EMPTY_DOCUMENT
    assert name in caught.value.message
