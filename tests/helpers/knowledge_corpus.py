"""The shipped workshop corpus: manuals, notes and a wiki page with known facts in known places.

`write_corpus(folder)` writes the same files every time (PDFs are built with
reportlab in invariant mode, so their bytes do not change between runs):

- six multi-page PDF manuals: a Prusa MK4 handbook, a Creality Ender-3 S1 Pro manual
  (the distractor: another printer, other limits), an E3D-V6 hotend datasheet with a
  part number table, a CO2 laser cutter manual, a soldering station manual and a
  filament guide;
- Markdown workshop notes, an HTML wiki page about CNC feeds and speeds and a plain
  text fire safety plan.

The pages read like real manuals, filler included (safety, maintenance, tips), so a
question's words also turn up in places that do not answer it. Every fact is recorded
as data (`Corpus.facts`): the sentence that answers it, where it is (file and page,
or file and section), and questions a user would ask. `write_corpus` checks that each
fact's sentence is where its data says.

The shipped query set, `benchmarks/data/knowledge_queries.json`, asks about the same
files in other words; `load_queries` reads it. `is_relevant` says whether a search hit
is the place a query's answer is, the unit a citation names: the page of a PDF, the
innermost section of a Markdown or HTML document, the file of a text document.

For error paths and ad-hoc tests: `write_corrupt_pdf` (a truncated download),
`write_encrypted_pdf` (needs a password) and `write_manual_pdf` (any manual, page by
page).
"""

# The manuals write sizes as printed manuals do, with the multiplication sign.
# ruff: noqa: RUF001

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
import io
import json
from pathlib import Path
import re
from typing import TYPE_CHECKING, Literal
from xml.sax.saxutils import escape

from pypdf import PdfReader
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.pdfencrypt import StandardEncryption
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import Flowable, PageBreak, Paragraph, SimpleDocTemplate, Table, TableStyle

from kittyai.contract.rag import SearchHit, SearchMode, SearchRequest, SourceKind

if TYPE_CHECKING:
    # Only for annotations: writing the corpus needs no knowledge base.
    from kittyai.rag.knowledge import KnowledgeBase

QUERY_SET = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "knowledge_queries.json"
QueryKind = Literal["fact", "keyword", "paraphrase"]
QUERY_KINDS: tuple[QueryKind, ...] = ("fact", "keyword", "paraphrase")
# Hits ranked per query when scoring: Recall@5 needs 5, the reciprocal rank counts to 10.
RANKED_HITS = 10
ENCRYPTED_PDF_PASSWORD = "workshop-2026"

_MEDIA_TYPES = {
    ".pdf": "application/pdf",
    ".md": "text/markdown",
    ".html": "text/html",
    ".txt": "text/plain",
}


# --- what the corpus is -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Place:
    """Where an answer is: a file and its page (PDF) or innermost section (Markdown, HTML).

    A plain text file has neither: the file is the place.
    """

    file: str
    page: int | None = None
    section: str | None = None


@dataclass(frozen=True, slots=True)
class Fact:
    """A fact of the corpus: the sentence stating it, where it is, and questions about it."""

    id: str
    place: Place
    answer: str
    questions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Query:
    """A query of the shipped query set, or a question of a fact (kind `fact`)."""

    kind: QueryKind
    text: str
    place: Place
    # The sentence of the document that answers it.
    answer: str


@dataclass(frozen=True, slots=True)
class CorpusFile:
    """A file of the corpus as written."""

    name: str
    path: Path
    media_type: str
    # PDF pages; 1 for the other documents.
    pages: int

    @property
    def source(self) -> str:
        """The source string the file is ingested under (`ingest_corpus`)."""
        return corpus_source(self.name)


@dataclass(frozen=True, slots=True)
class Corpus:
    """The written corpus: its files and the facts in them."""

    folder: Path
    files: tuple[CorpusFile, ...]
    facts: tuple[Fact, ...]

    def file(self, name: str) -> CorpusFile:
        """Return the file called `name`."""
        for corpus_file in self.files:
            if corpus_file.name == name:
                return corpus_file
        raise KeyError(name)

    @property
    def pdf_pages(self) -> int:
        """Pages of all PDFs together."""
        return sum(f.pages for f in self.files if f.media_type == "application/pdf")

    def fact_queries(self) -> list[Query]:
        """Return every question of every fact as a `fact` query."""
        return [
            Query("fact", question, fact.place, fact.answer)
            for fact in self.facts
            for question in fact.questions
        ]


def corpus_source(name: str) -> str:
    """Return the source a corpus file is ingested under: as if dropped into the share."""
    return f"share:kitty/knowledge/{name}"


async def ingest_corpus(knowledge: KnowledgeBase, corpus: Corpus) -> None:
    """Ingest every file of `corpus` into `knowledge` under its `CorpusFile.source`."""
    for corpus_file in corpus.files:
        await knowledge.ingest(
            corpus_file.path.read_bytes(),
            source=corpus_file.source,
            source_kind=SourceKind.SHARE,
            name=corpus_file.name,
            media_type=corpus_file.media_type,
        )


def load_queries(path: Path = QUERY_SET) -> list[Query]:
    """Return the queries of the shipped query set, in file order."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return [
        Query(
            kind=item["kind"],
            text=item["query"],
            place=Place(item["file"], item["page"], item["section"]),
            answer=item["answer"],
        )
        for item in data["queries"]
    ]


def is_relevant(hit: SearchHit, place: Place) -> bool:
    """Return whether `hit` is the place: same file, and same page or innermost section."""
    if hit.source != corpus_source(place.file):
        return False
    if place.page is not None:
        return hit.page == place.page
    if place.section is not None:
        return bool(hit.section) and hit.section[-1] == place.section
    return True


def first_relevant_rank(hits: Sequence[SearchHit], place: Place) -> int | None:
    """Return the 1-based rank of the first hit at `place`, None if none is."""
    for rank, hit in enumerate(hits, start=1):
        if is_relevant(hit, place):
            return rank
    return None


async def first_relevant_ranks(
    knowledge: KnowledgeBase, queries: Iterable[Query], mode: SearchMode
) -> list[int | None]:
    """Search each query in `mode`; return the rank of its first relevant hit, or None."""
    ranks = []
    for query in queries:
        response = await knowledge.search(
            SearchRequest(query=query.text, limit=RANKED_HITS, mode=mode)
        )
        ranks.append(first_relevant_rank(response.hits, query.place))
    return ranks


def recall_at(ranks: Sequence[int | None], k: int) -> float:
    """Return the share of queries with a relevant hit in their top `k`."""
    return sum(rank is not None and rank <= k for rank in ranks) / len(ranks)


def mean_reciprocal_rank(ranks: Sequence[int | None]) -> float:
    """Return the mean of 1/rank of the first relevant hit (0 when none is ranked)."""
    return sum(1 / rank for rank in ranks if rank is not None) / len(ranks)


def normalise(text: str) -> str:
    """Return `text` with table bars dropped and whitespace collapsed, for comparisons."""
    return " ".join(text.replace("|", " ").split())


# --- PDFs -------------------------------------------------------------------------------

_STYLES = getSampleStyleSheet()
_TABLE_STYLE = TableStyle(
    [
        ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
        ("FONTSIZE", (0, 0), (-1, -1), 9),
        ("GRID", (0, 0), (-1, -1), 0.5, colors.grey),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]
)


def write_manual_pdf(
    path: Path,
    pages: Sequence[Sequence[str]],
    title: str,
    *,
    encrypt_password: str | None = None,
) -> None:
    """Write a manual with one page per item of `pages`, each page a list of blocks.

    A block starting with `#` is a heading (`## 4.3 Heatbed` is a level-2 heading
    "4.3 Heatbed"); consecutive blocks starting with `|` are the rows of a table,
    cells between bars (the first row is the header); any other block is a paragraph.
    Every page has a footer with the page number. `title` is the PDF's metadata title.

    Raises:
        ValueError: a page's blocks do not fit on one A4 page.
    """
    story: list[Flowable] = []
    for number, blocks in enumerate(pages, start=1):
        if number > 1:
            story.append(PageBreak())
        story.extend(_flowables(blocks))

    def footer(canvas: Canvas, doc: SimpleDocTemplate) -> None:
        canvas.setFont("Helvetica", 8)
        canvas.drawCentredString(A4[0] / 2, 12 * mm, f"- {doc.page} -")

    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        title=title,
        author="KITTY test corpus",
        invariant=True,
        encrypt=(
            StandardEncryption(encrypt_password, strength=128)
            if encrypt_password is not None
            else None
        ),
    )
    document.build(story, onFirstPage=footer, onLaterPages=footer)
    data = buffer.getvalue()
    written = len(PdfReader(io.BytesIO(data), password=encrypt_password).pages)
    if written != len(pages):
        raise ValueError(f"{path.name}: {len(pages)} pages of text took {written} PDF pages")
    path.write_bytes(data)


def _flowables(blocks: Sequence[str]) -> Iterable[Flowable]:
    rows: list[list[Paragraph]] = []
    for block in blocks:
        if block.startswith("|"):
            style = _STYLES["BodyText"]
            rows.append(
                [Paragraph(escape(cell.strip()), style) for cell in block.strip("|").split("|")]
            )
            continue
        if rows:
            yield _table(rows)
            rows = []
        if block.startswith("#"):
            level = len(block) - len(block.lstrip("#"))
            yield Paragraph(escape(block[level:].strip()), _STYLES[f"Heading{min(level, 3)}"])
        else:
            yield Paragraph(escape(block), _STYLES["BodyText"])
    if rows:
        yield _table(rows)


def _table(rows: list[list[Paragraph]]) -> Table:
    width = (A4[0] - 50 * mm) / len(rows[0])
    table = Table(rows, colWidths=[width] * len(rows[0]), repeatRows=1)
    table.setStyle(_TABLE_STYLE)
    return table


def write_corrupt_pdf(path: Path) -> None:
    """Write a PDF cut off after its first kilobyte, as an interrupted download leaves it."""
    write_manual_pdf(
        path, [["# 1 Overview", "This manual was never downloaded completely."]], "Broken"
    )
    path.write_bytes(path.read_bytes()[:1024])


def write_encrypted_pdf(path: Path, password: str = ENCRYPTED_PDF_PASSWORD) -> None:
    """Write a two-page manual that opens only with `password` (128-bit encryption)."""
    write_manual_pdf(
        path,
        [
            ["# 1 Confidential service manual", "The service menu code is printed on page 2."],
            ["# 2 Service menu", "Hold the knob for ten seconds to enter the service menu."],
        ],
        "Protected service manual",
        encrypt_password=password,
    )


# --- the corpus ---------------------------------------------------------------------------


def write_corpus(folder: Path) -> Corpus:
    """Write the shipped corpus into `folder` (made if missing) and return what it holds.

    Raises:
        ValueError: a fact's sentence is not where its data says (the corpus data is wrong).
    """
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, (title, pages) in _MANUALS.items():
        write_manual_pdf(folder / name, pages, title)
        files.append(CorpusFile(name, folder / name, _MEDIA_TYPES[".pdf"], len(pages)))
    for name, text in _TEXT_DOCUMENTS.items():
        (folder / name).write_text(text, encoding="utf-8")
        files.append(CorpusFile(name, folder / name, _MEDIA_TYPES[Path(name).suffix], 1))
    for fact in FACTS:
        _check_place(fact.place, fact.answer, fact.id)
    return Corpus(folder, tuple(files), FACTS)


def check_query_places(queries: Iterable[Query]) -> None:
    """Check that each query's answer sentence is at its place in the corpus.

    Raises:
        ValueError: naming the first query whose answer is not there.
    """
    for query in queries:
        _check_place(query.place, query.answer, query.text)


def place_text(place: Place) -> str:
    """Return the source text at `place`: a page's blocks, a section's lines, a whole file."""
    if place.page is not None:
        _, pages = _MANUALS[place.file]
        return normalise(" ".join(pages[place.page - 1]))
    text = _TEXT_DOCUMENTS[place.file]
    if place.section is None:
        return normalise(text)
    return normalise(" ".join(_section_lines(place.file, text).get(place.section, [])))


def _check_place(place: Place, answer: str, what: str) -> None:
    if place.file not in _MANUALS and place.file not in _TEXT_DOCUMENTS:
        raise ValueError(f"{what}: no corpus file {place.file}")
    if normalise(answer) not in place_text(place):
        raise ValueError(f"{what}: {answer!r} is not at {place}")


_MARKDOWN_HEADING = re.compile(r"^#{1,6}\s+(.*)$")
_HTML_HEADING = re.compile(r"<h[1-6][^>]*>(.*?)</h[1-6]>", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]+>")


def _section_lines(name: str, text: str) -> dict[str, list[str]]:
    """Return each innermost heading's own text: lines up to the next heading of any level."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    if name.endswith(".md"):
        for line in text.splitlines():
            if match := _MARKDOWN_HEADING.match(line):
                current = sections.setdefault(match.group(1).strip(), [])
            else:
                current.append(line)
        return sections
    position = 0
    for match in _HTML_HEADING.finditer(text):
        current.append(_HTML_TAG.sub(" ", text[position : match.start()]))
        current = sections.setdefault(_HTML_TAG.sub("", match.group(1)).strip(), [])
        position = match.end()
    current.append(_HTML_TAG.sub(" ", text[position:]))
    return sections


MK4 = "prusa_mk4_handbook.pdf"
ENDER = "creality_ender3_s1_pro_manual.pdf"
HOTEND = "e3d_v6_hotend_datasheet.pdf"
LASER = "lasercraft_lc40_manual.pdf"
SOLDERING = "solderpro_sp80_manual.pdf"
FILAMENT = "filament_guide.pdf"
NOTES = "workshop_notes.md"
CNC_WIKI = "cnc_feeds_and_speeds.html"
FIRE_PLAN = "fire_safety_plan.txt"

_MANUALS: dict[str, tuple[str, list[list[str]]]] = {
    MK4: (
        "Original Prusa MK4 Handbook",
        [
            [
                "# 1 Introduction",
                "Thank you for choosing the Original Prusa MK4. This handbook explains how to"
                " set up, calibrate and maintain the printer, and what to do when something"
                " goes wrong. Read the safety instructions in chapter 2 before you switch the"
                " printer on for the first time.",
                "## 1.1 About this handbook",
                "The handbook describes printers running firmware 6.2 or newer. Menu items are"
                " written in capitals, for example CONTROL > CALIBRATION. Pictures may differ"
                " slightly from your printer, because the hardware is improved in small steps"
                " during production. The latest edition of the handbook is available as a PDF"
                " in the Help Center.",
                "## 1.2 Getting help",
                "If you have trouble with the printer, look at the troubleshooting chapter"
                " first. Most problems with adhesion, stringing or layer shifts are described"
                " there together with their fixes. Our support team answers in the chat on the"
                " website 24 hours a day, 7 days a week. Before you contact support, have the"
                " serial number at hand, it is printed on a sticker at the back of the frame.",
            ],
            [
                "# 2 Safety instructions",
                "Please read these instructions carefully. Ignoring them can lead to injury,"
                " fire or damage to the printer.",
                "## 2.1 Electrical safety",
                "The printer is powered from a 100-240 V AC, 50/60 Hz mains socket. Use only"
                " the power cable supplied with the printer, and never use an extension cord"
                " without a ground connection. Do not open the power supply unit: it holds a"
                " dangerous voltage even after the cable is unplugged. Disconnect the printer"
                " from the mains before any maintenance work on the electronics.",
                "## 2.2 Hot surfaces",
                "During printing the nozzle and the heatbed are hot enough to cause burns. Do"
                " not touch them while the printer is running. After a print, let the hotend"
                " cool down below 50 °C before you change the nozzle or clean the extruder.",
                "## 2.3 Fire and ventilation",
                "Never leave the printer unattended during a print, and keep it away from"
                " flammable materials such as curtains or paper. Place the printer in a"
                " well-ventilated room: some materials, especially ABS and ASA, release fumes"
                " while printing. Children must not use the printer without supervision.",
            ],
            [
                "# 3 Unpacking and package contents",
                "Keep the original box and the foam inserts. The printer must be shipped in its"
                " original packaging for warranty service, and the box protects the frame from"
                " damage when you move.",
                "## 3.1 What is in the box",
                "The package contains the fully assembled printer, a textured powder-coated"
                " steel sheet, a power cable, a USB drive with sample models and the latest"
                " firmware, a spare PTFE tube, a set of Allen keys (1.5, 2, 2.5 and 3 mm), a"
                " nozzle cleaning needle, a spatula and a 500 g spool of Prusament PLA.",
                "## 3.2 Removing the transport locks",
                "Before the first start, cut the cable ties that hold the X carriage and the"
                " heatbed in place during transport. Move the print head gently by hand along"
                " the X axis to check that it runs freely. Remove the protective film from the"
                " display. Place the printer on a flat, stable surface with at least 10 cm of"
                " free space behind it for the cables and the filament spool.",
            ],
            [
                "# 4 Technical specifications",
                "## 4.1 Printer",
                "The build volume is 250 × 210 × 220 mm. The printer uses 1.75 mm filament."
                " Layer height can be set from 0.05 to 0.30 mm. The frame is made of aluminium"
                " extrusions, and the printer weighs 7 kg without the spool. Typical print speed"
                " is up to 200 mm/s, with travel moves at up to 400 mm/s when Input Shaper is"
                " enabled.",
                "## 4.2 Extruder and hotend",
                "The Nextruder is a direct drive extruder with a planetary gearbox and a 10:1"
                " gear ratio. The hotend uses quick-swap nozzles; the printer ships with a"
                " 0.4 mm brass nozzle. The maximum nozzle temperature is 300 °C. For abrasive"
                " filaments such as carbon-fibre composites, fit a hardened steel nozzle.",
            ],
            [
                "## 4.3 Heatbed",
                "The heatbed is a 24 V aluminium plate with a magnet for the removable steel"
                " sheets. The heatbed reaches a maximum temperature of 120 °C. Bed levelling is"
                " automatic: before every print the load cell in the extruder probes the bed at"
                " 16 points and the firmware compensates for any unevenness.",
                "## 4.4 Electronics and connectivity",
                "The printer is controlled by the xBuddy board with a 32-bit processor. The"
                " power supply delivers 240 W at 24 V. The printer connects to your network over"
                " Ethernet or Wi-Fi, and it can be monitored in a web browser with PrusaLink."
                " The Wi-Fi module works with 2.4 GHz networks only.",
                "## 4.5 Noise and power consumption",
                "In normal mode the printer is quieter than 45 dB. Power consumption is about"
                " 80 W while printing PLA and up to 200 W while the bed heats for ASA or PC.",
            ],
            [
                "# 5 First layer calibration",
                "A good first layer is the key to a successful print. Because the load cell"
                " measures the nozzle height directly, the MK4 needs no manual Z offset"
                " adjustment in normal use. Run the first layer test only after you have changed"
                " the nozzle or the steel sheet.",
                "## 5.1 Running the first layer test",
                "Choose CONTROL > CALIBRATION > FIRST LAYER. The printer heats up, probes the"
                " bed and prints a meander pattern followed by a square. Watch the square: the"
                " lines should be slightly flattened and merge into a smooth surface without"
                " gaps.",
                "## 5.2 Judging the result",
                "If the lines are round and separate, the nozzle is too high; if the surface is"
                " rough and the nozzle scrapes, it is too low. In both cases clean the nozzle"
                " tip, because plastic stuck to the nozzle disturbs the load cell measurement."
                " Wipe the steel sheet with isopropyl alcohol before each print; fingerprints"
                " are the most common cause of poor adhesion.",
            ],
            [
                "# 6 Loading and changing filament",
                "## 6.1 Loading filament",
                "Choose LOAD FILAMENT in the main menu and select the material. The printer"
                " preheats the nozzle: 215 °C for PLA, 230 °C for PETG and 255 °C for ASA. Cut"
                " the end of the filament at an angle, push it into the extruder until the gears"
                " grab it, and confirm when the new colour flows out cleanly.",
                "## 6.2 Unloading filament",
                "Choose UNLOAD FILAMENT. The extruder pushes the filament down a little, then"
                " pulls it out quickly to form a clean tip. Pull the filament out of the"
                " extruder once the printer asks you to, and secure the loose end in the"
                " spool's holes so it does not unwind.",
                "## 6.3 Changing colour during a print",
                "In PrusaSlicer, right-click the layer slider at the height where the colour"
                " should change and add a colour change. The printer pauses at that layer,"
                " unloads the filament and waits for you to load the next one.",
            ],
            [
                "# 7 Regular maintenance",
                "The printer needs little maintenance, but a few checks keep it reliable. Keep"
                " a log of print hours; the statistics are in the menu under INFO > STATISTICS.",
                "## 7.1 Lubrication",
                "Lubricate the linear rods of the X, Y and Z axes with a thin layer of Prusa"
                " lubricant every 500 print hours. Move each axis back and forth by hand to"
                " spread the grease. Do not oil the rods: oil collects dust and wears the"
                " bearings.",
                "## 7.2 Belt tension",
                "Check the X and Y belts every three months. Open CONTROL > CALIBRATION > BELT"
                " TUNING: the printer vibrates each belt and measures its frequency. The Y belt"
                " should vibrate at 85 to 95 Hz. A loose belt causes layer shifts and wavy"
                " walls.",
                "## 7.3 Cleaning the steel sheet",
                "Clean the textured sheet with warm water and dish soap when isopropyl alcohol"
                " no longer restores adhesion. Never use acetone on the textured sheet, it"
                " damages the coating.",
            ],
            [
                "# 8 Troubleshooting",
                "## 8.1 Error messages",
                "Error 17505 HEATBED THERMAL RUNAWAY: the bed temperature fell while heating"
                " was on. Check that the bed cable is firmly plugged into the xBuddy board and"
                " that the thermistor is not damaged.",
                "Error 17202 NOZZLE MAXTEMP: the nozzle thermistor reported more than 305 °C."
                " Switch the printer off and check the thermistor wiring before printing again.",
                "Error 17301 HOTEND FAN ERROR: the hotend fan does not spin. Remove any"
                " filament strands caught in the fan and check its connector.",
                "## 8.2 Print quality problems",
                "Stringing: dry the filament and increase retraction slightly. Layer shifts:"
                " check the belt tension and make sure nothing blocks the print head. Warping"
                " on large parts: use a brim and keep the printer away from draughts, or print"
                " inside an enclosure.",
            ],
            [
                "# 9 Firmware and warranty",
                "## 9.1 Updating the firmware",
                "Download the firmware file (.bbf) from the Prusa website and copy it to the"
                " root of the USB drive. Insert the drive with the printer switched off, then"
                " switch it on: the printer offers to flash the new firmware. Do not switch the"
                " printer off while the update is running.",
                "## 9.2 Warranty",
                "The printer is covered by a 24-month warranty from the date of delivery. The"
                " warranty does not cover the nozzle, the steel sheets and other wear parts, or"
                " damage caused by modifications to the electronics. Keep the invoice and the"
                " original packaging.",
            ],
        ],
    ),
    ENDER: (
        "Creality Ender-3 S1 Pro User Manual",
        [
            [
                "# 1 Safety notices",
                "Do not place the printer in a vibrating or unstable environment. The printer"
                " contains high-temperature parts and moving parts; do not touch the nozzle or"
                " the hot bed while printing. Keep children and pets away from the printer. Use"
                " the printer in a ventilated environment and switch it off when it is not in"
                " use.",
                "# 2 Machine parameters",
                "Model: Ender-3 S1 Pro. Printing size: 220 × 220 × 270 mm. Filament diameter:"
                " 1.75 mm. The maximum nozzle temperature is 300 °C. The maximum hot bed"
                " temperature is 110 °C. Rated power: 350 W. Rated voltage: 24 V. Printing"
                " speed: up to 150 mm/s, 50 mm/s recommended. Leveling: CR Touch automatic"
                " leveling with 16 points. Print surface: PEI spring steel sheet.",
            ],
            [
                "# 3 Assembly",
                "## 3.1 Gantry",
                "Fix the gantry frame to the base with the four M5 × 45 hexagon socket screws."
                " Tighten the screws diagonally so the frame stays square. Check with a square"
                " that the gantry is perpendicular to the base.",
                "## 3.2 Screen and spool holder",
                "Mount the screen on the right side of the base with three M5 × 8 screws and"
                " connect its cable. Fit the spool holder to the top profile.",
                "## 3.3 Voltage switch",
                "Before switching on, set the voltage switch on the power supply to match your"
                " mains: 115 V or 230 V. A wrong setting can damage the power supply.",
            ],
            [
                "# 4 Leveling",
                "## 4.1 Auto leveling",
                "Preheat the nozzle to 200 °C and the hot bed to 60 °C, then select Level >"
                " Auto leveling. The probe measures 16 points; the result is saved"
                " automatically.",
                "## 4.2 Z offset",
                "Select Level > Z offset. Place a sheet of A4 paper on the bed and lower the"
                " nozzle in 0.05 mm steps until you feel slight friction when moving the paper."
                " Save the value.",
            ],
            [
                "# 5 Filament loading",
                "Heat the nozzle to 200 °C for PLA or 240 °C for PETG. Press the extruder lever"
                " and insert the filament through the Sprite extruder until it comes out of the"
                " nozzle.",
                "# 6 Maintenance",
                "Clean the nozzle with the cleaning needle when the extrusion is uneven. Add"
                " grease to the Z lead screws every three months. Check the eccentric nuts of"
                " the X and Y rollers: the wheels must roll without play.",
            ],
            [
                "# 7 Troubleshooting",
                "Error E1: the nozzle temperature sensor is abnormal; check the thermistor"
                " cable. Error E2: the hot bed temperature sensor is abnormal. Error E3: the"
                " nozzle heats too slowly; check the heater cartridge. Error E4: hot bed heating"
                " failure.",
                "Filament does not come out: check for a blocked nozzle, heat it to 230 °C and"
                " clear it with the needle.",
            ],
        ],
    ),
    HOTEND: (
        "E3D-V6 All-Metal HotEnd Datasheet",
        [
            [
                "# 1 Overview",
                "The E3D-V6 is an all-metal hotend for 1.75 mm filament. Its stainless steel"
                " heat break with a thin-walled throat keeps the melt zone short, so the hotend"
                " prints PLA, PETG, ABS, nylon and polycarbonate without a PTFE liner in the hot"
                " zone.",
                "## 1.1 Temperature limits",
                "With the standard Semitec 104NT thermistor the E3D-V6 is rated for a maximum of"
                " 285 °C. Fit the PT100 temperature sensor upgrade to print up to 400 °C; above"
                " 300 °C the brass nozzle must be replaced by a hardened steel or plated copper"
                " nozzle.",
                "## 1.2 Compatibility",
                "The heat sink has a standard groove mount 16 mm in diameter, so the hotend fits"
                " most extruders designed for a J-head. The cooling fan must always blow over"
                " the heat sink while the hotend is hot.",
            ],
            [
                "# 2 Part numbers",
                "Order spare parts by part number. Parts for the 24 V version end in B.",
                "| Part number | Description | Notes |",
                "| PN-2045-B | Heater cartridge 24 V 40 W | 6 mm diameter, 20 mm long, 1 m cable |",
                "| PN-2045-A | Heater cartridge 12 V 40 W | for 12 V printers only |",
                "| PN-1180-T | Heat break, titanium alloy | conducts less heat than steel |",
                "| PN-1180-S | Heat break, stainless steel | standard part |",
                "| PN-3301 | Thermistor cartridge, 100k NTC | 3 mm diameter |",
                "| PN-0406-BR | Nozzle 0.4 mm, brass, M6 thread | for 1.75 mm filament |",
                "| PN-0406-HS | Nozzle 0.4 mm, hardened steel, M6 thread | for abrasive filament |",
                "| PN-5015-B | Fan 30 × 30 × 10 mm, 24 V | heat sink fan |",
                "| PN-7720 | Silicone sock for the heater block | reduces heat loss |",
            ],
            [
                "# 3 Assembly",
                "## 3.1 Nozzle and heat break",
                "Screw the heat break into the heater block from the top until it is flush."
                " Screw the nozzle into the bottom of the heater block, then back it out a"
                " quarter turn, so that the nozzle tightens against the heat break and not"
                " against the block. The nozzle has an M6 thread with a 1 mm pitch.",
                "## 3.2 Hot tightening",
                "Heat the hotend to 285 °C and wait one minute for the parts to expand. Hold the"
                " heater block with a spanner and tighten the nozzle to 3 Nm. Do not"
                " overtighten: the heat break is the weakest part of the assembly and breaks"
                " easily when hot. A hotend that is not hot-tightened will leak molten plastic"
                " around the thread.",
                "## 3.3 Heater cartridge and thermistor",
                "Slide the heater cartridge into the heater block so it protrudes equally on"
                " both sides, and clamp it with the M3 screw. Push the thermistor cartridge in"
                " until it stops and secure it with the M3 grub screw. Do not overtighten the"
                " grub screw, it can crush the thermistor.",
            ],
            [
                "# 4 Wiring and troubleshooting",
                "## 4.1 Checking the heater cartridge",
                "Measure the resistance of the heater cartridge between its two wires with a"
                " multimeter at room temperature. A 24 V 40 W cartridge measures about 14.4"
                " ohms, a 12 V 40 W cartridge about 3.6 ohms. A reading near zero means a short"
                " circuit; an open circuit means the cartridge is broken.",
                "## 4.2 Heat creep and clogs",
                "If the filament softens too high up in the heat break, it jams. This is called"
                " heat creep. Make sure the heat sink fan runs at full speed whenever the hotend"
                " is above 50 °C, and reduce retraction to 1 mm or less. To clear a clog, do a"
                " cold pull: heat to 250 °C, push filament through, cool to 90 °C and pull the"
                " filament out in one firm movement.",
            ],
        ],
    ),
    LASER: (
        "LaserCraft LC-40 CO2 Laser Cutter Operator's Manual",
        [
            [
                "# 1 Laser safety",
                "The LC-40 is a Class 4 laser product. The invisible infrared beam at 10.6 µm"
                " can cause severe burns and start fires. Direct or reflected beams can damage"
                " the eyes permanently.",
                "## 1.1 Rules for safe operation",
                "Never run a job with the lid open or the interlock bypassed. Never leave the"
                " machine unattended while the laser is firing: a small flame in the material"
                " can become a fire within seconds. Keep a CO2 fire extinguisher within reach of"
                " the machine. Wear safety glasses rated OD 5+ for 10.6 µm when you align the"
                " mirrors with the lid open.",
                "## 1.2 Fumes",
                "Cutting produces smoke and toxic gases. Always run the exhaust fan and vent it"
                " to the outside. Never cut materials containing chlorine, see chapter 5.",
            ],
            [
                "# 2 Specifications",
                "The LC-40 has a 40 W sealed CO2 laser tube. The work area is 400 × 300 mm, and"
                " the honeycomb bed can be lowered by 50 mm for thicker workpieces. The focus"
                " lens has a diameter of 12 mm and a focal length of 50.8 mm. Maximum engraving"
                " speed is 500 mm/s; cutting is usually done at 5 to 20 mm/s. The machine needs"
                " a 230 V, 10 A socket and draws up to 800 W together with the chiller and the"
                " exhaust fan.",
            ],
            [
                "# 3 Cooling and ventilation",
                "## 3.1 Water cooling",
                "The laser tube is cooled by a closed water circuit with a chiller. Fill the"
                " circuit with distilled water only; tap water leaves deposits in the tube. Keep"
                " the cooling water between 15 and 25 °C. Above 25 °C the laser power drops, and"
                " above 30 °C the tube ages quickly. The controller stops the laser when the"
                " flow sensor reports no water flow.",
                "## 3.2 Winter operation",
                "If the workshop can freeze, add 20 % laboratory-grade antifreeze, or drain the"
                " circuit. Ice cracks the glass tube.",
                "## 3.3 Exhaust",
                "Connect the exhaust fan with the supplied 100 mm duct. The fan moves about"
                " 300 m³/h; keep the duct short and straight.",
            ],
            [
                "# 4 Focusing and alignment",
                "## 4.1 Setting the focus",
                "Place the workpiece on the bed, put the 6 mm acrylic focus gauge on it under"
                " the lens and lower the head until the gauge just touches the nozzle. Remove"
                " the gauge before starting the job. For cutting thick material, focus 1 mm"
                " below the surface.",
                "## 4.2 Mirror alignment",
                "The beam passes three mirrors before the lens. If the cut is weaker on one side"
                " of the bed than on the other, check the alignment: fire short test pulses onto"
                " masking tape at each mirror, near and far, and adjust the mirror screws until"
                " the marks coincide.",
            ],
            [
                "# 5 Materials",
                "## 5.1 Safe materials",
                "Plywood and MDF up to 6 mm, cast acrylic up to 8 mm, cardboard, paper, leather,"
                " felt and cork can be cut. Glass, stone and anodised aluminium can be engraved"
                " but not cut.",
                "## 5.2 Forbidden materials",
                "Never cut PVC, vinyl or artificial leather containing PVC: they release"
                " chlorine gas, which is toxic and corrodes the machine's mirrors and rails. Do"
                " not cut polycarbonate or ABS, they melt and catch fire, nor fibreglass or"
                " carbon fibre. If you do not know what a plastic is made of, do not put it in"
                " the laser.",
            ],
            [
                "# 6 Error codes",
                "The controller shows a code on the display and stops the job.",
                "| Code | Meaning | What to do |",
                "| 0x3F | Water flow interrupted | Check the chiller, the pump and the hoses |",
                "| 0x21 | Lid interlock open | Close the lid; check the interlock switch |",
                "| 0x12 | X limit switch not found during homing | Check the switch cable |",
                "| 0x13 | Y limit switch not found during homing | Check the switch cable |",
                "| 0x47 | Tube over temperature | Let the water cool below 25 °C |",
                "| 0x52 | Exhaust fan fault | Check the fan fuse and the duct |",
                "| 0x05 | Job file cannot be read | Export the job again to a FAT32 drive |",
            ],
            [
                "# 7 Maintenance",
                "## 7.1 Weekly",
                "Clean the lens and the three mirrors with a cotton swab and isopropyl alcohol"
                " once a week, or daily when you cut a lot of wood. A dirty lens absorbs the"
                " beam, heats up and can crack. Empty the crumb tray under the honeycomb bed.",
                "## 7.2 Monthly",
                "Change the cooling water every month. Clean and lightly oil the linear rails"
                " with sewing machine oil. Check the drive belts for wear.",
                "## 7.3 Laser tube lifetime",
                "A CO2 tube lasts about 1500 hours of firing. When the cuts become weak even"
                " after cleaning and alignment, the tube is near the end of its life. Running"
                " the tube above 80 % power shortens its life considerably.",
            ],
        ],
    ),
    SOLDERING: (
        "SolderPro SP-80 Soldering Station Manual",
        [
            [
                "# 1 Safety",
                "The tip of the soldering iron reaches up to 480 °C. Always put the iron back in"
                " its stand when you are not using it, and never touch the metal parts of the"
                " handle near the tip. Solder fumes irritate the eyes and lungs: use a fume"
                " extractor. Wash your hands after soldering, especially with leaded solder. The"
                " station is ESD safe: connect the grounding socket on the back to the bench's"
                " ESD mat.",
                "# 2 Specifications",
                "Power: 80 W. Temperature range: 200 to 480 °C. Temperature stability: ±2 °C at"
                " idle. The iron heats from room temperature to 350 °C in about 20 seconds."
                " Heater voltage: 24 V. Tip series: T80. Mains input: 220-240 V AC.",
            ],
            [
                "# 3 Operation",
                "## 3.1 Setting the temperature",
                "Turn the knob to set the temperature; the display blinks until the tip has"
                " reached it. For lead-free solder set 350 °C; for leaded solder 320 °C is"
                " enough. Use the lowest temperature that lets the solder flow within two or"
                " three seconds: higher temperatures oxidise the tip quickly.",
                "## 3.2 Presets and lock",
                "Press the P1, P2 or P3 key to select a stored temperature; hold the key for"
                " 3 seconds to store the current one. Hold the UP and DOWN keys together for"
                " 3 seconds to lock the temperature, for example in a classroom.",
                "## 3.3 Sleep mode",
                "When the iron rests in its stand for 10 minutes, the station lowers the tip"
                " temperature to 200 °C; after 30 minutes in sleep mode it switches the heater"
                " off. Lift the iron to wake the station.",
            ],
            [
                "# 4 Tip care",
                "Tin the tip with fresh solder before putting the iron back in the stand and"
                " before switching off. Clean the tip on brass wool rather than on a wet sponge:"
                " the sponge cools the tip sharply and shortens its life. A black, non-wetting"
                " tip can often be restored with tip tinner paste. Change tips only when the"
                " iron is cold, or use the heat-resistant pad; pull the tip straight out of the"
                " handle without twisting.",
            ],
            [
                "# 5 Calibration and error messages",
                "## 5.1 Calibration",
                "Measure the tip with a tip thermometer at 350 °C. Hold the SET key while"
                " switching on to enter calibration, and enter the difference between the"
                " displayed and the measured temperature. The offset can be set within ±50 °C.",
                "## 5.2 Error messages",
                "E-1: the tip sensor is open; the tip is not inserted or is broken. E-2: the"
                " heater is open; replace the tip. E-3: the handle is overheating; let the"
                " station cool down and check the fan. E-4: the supply voltage is too low.",
            ],
        ],
    ),
    FILAMENT: (
        "Workshop Filament Guide",
        [
            [
                "# 1 PLA",
                "PLA is the easiest material to print and the right choice for prototypes,"
                " models and parts that stay indoors. It prints at 200-220 °C on a bed at"
                " 55-60 °C and needs no enclosure. Cooling fan: 100 % after the first layers."
                " PLA softens at about 55 °C, so do not leave PLA parts in a car in summer or"
                " use them near heat sources. It is brittle compared with PETG and breaks rather"
                " than bends.",
                "## 1.1 PLA tips",
                "Print PLA on a smooth PEI sheet for a glossy underside or on a textured sheet"
                " for easy removal. Store opened spools in a dry box; wet PLA prints with small"
                " bubbles and a rough surface.",
            ],
            [
                "# 2 PETG",
                "PETG is tougher than PLA, resists water and many chemicals, and tolerates"
                " temperatures up to about 75 °C. Print it at 230-250 °C with the bed at"
                " 80-90 °C and the part cooling fan at 30-50 %. PETG sticks very strongly to"
                " smooth PEI: apply a thin layer of glue stick or use a textured sheet as a"
                " release agent, otherwise the sheet can be torn when you remove the part. PETG"
                " strings more than PLA; dry the filament and print a little cooler to reduce"
                " stringing.",
            ],
            [
                "# 3 ABS and ASA",
                "ABS and ASA are heat resistant to about 95 °C, and ABS can be smoothed with"
                " acetone vapour. ASA also resists UV light and is the better choice for parts"
                " used outdoors. Print them at 240-260 °C with the bed at 100-110 °C. An"
                " enclosure is required: draughts cause warping and cracks between layers. Both"
                " materials release styrene fumes while printing, so the room must be"
                " ventilated or the enclosure filtered. Switch the part cooling fan off, or run"
                " it at 10 % at most for bridges.",
            ],
            [
                "# 4 TPU and flexible filaments",
                "TPU with a hardness of 95A prints well on direct drive extruders. Print slowly,"
                " at 20-30 mm/s, at 220-235 °C, with retraction switched off or very short."
                " Bowden extruders struggle with soft filaments because the filament buckles in"
                " the tube. TPU absorbs moisture quickly and must be dried before printing.",
            ],
            [
                "# 5 Nylon and composites",
                "Nylon (PA) is strong and wear resistant but absorbs water within hours. Dry it"
                " thoroughly before printing (see the drying table in chapter 6) and print"
                " directly from a dry box. Print at 250-270 °C on a bed at 70-90 °C with glue"
                " stick on the sheet. Carbon-fibre and glass-fibre filled filaments are"
                " abrasive: a brass nozzle wears out within a few hundred grams, so use a"
                " hardened steel nozzle.",
            ],
            [
                "# 6 Drying and storage",
                "| Material | Drying temperature | Time |",
                "| PLA | 45 °C | 4-6 h |",
                "| PETG | 65 °C | 4 h |",
                "| ABS / ASA | 80 °C | 4 h |",
                "| TPU | 50 °C | 6 h |",
                "| Nylon | 70 °C | 12 h |",
                "Store spools in airtight boxes with silica gel and keep the humidity below"
                " 20 %. Replace or regenerate the silica gel when the indicator beads change"
                " colour. A filament dryer that prints from the heated box is worth it for nylon"
                " and TPU.",
            ],
        ],
    ),
}

_TEXT_DOCUMENTS: dict[str, str] = {
    NOTES: """\
# Workshop notes

Shared notes of the workshop: projects, machines and the things we keep forgetting.
Add to them and date your entries.

## Drone project

A 5-inch freestyle quad built around a printed frame with carbon arms. Goal: first
flight before the end of the month.

### Motor mounts

The printed motor mounts need 3 mm heat-set inserts: four M3 inserts per mount,
pressed in with the soldering iron at 220 °C. Print the mounts in PETG with 5 walls
and 40 % gyroid infill; the PLA test mounts cracked after two crashes. Use M3 × 8
screws, longer ones touch the motor windings.

### Electronics

The flight controller is an F7 stack with a 45 A 4-in-1 ESC, running Betaflight 4.5.
Battery: 6S 1100 mAh LiPo with an XT60 connector. The receiver is bound to the radio
as model 3. Calibrate the accelerometer after mounting the stack on the soft-mount
grommets.

### Open questions

Propellers: 5.1 inch tri-blades or 5 inch bi-blades, test both. The camera tilt of
30° may be too steep for cruising.

## Air compressor

The compressor tank holds 50 litres. Drain the condensate from the tank every
Friday: open the valve at the bottom until only air comes out. Set the regulator to
6 bar for the nail gun and the blow gun, and to 1.5 bar for the airbrush. The safety
valve opens at 10 bar; if it ever blows, switch the compressor off and check the
pressure switch.

## Resin printer

### Wash and cure

Wash prints in isopropyl alcohol for 3 minutes in the wash station, let them dry for
30 minutes, then cure them for 5 minutes at 60 °C under UV. Wear nitrile gloves:
uncured resin causes skin allergies. Replace the IPA when it turns cloudy, about
every 2 litres of prints.

### Vat and FEP

Check the FEP film for dents before every print and replace it after about 30 prints
or when it becomes cloudy. Never scrape the film with metal tools; use the plastic
spatula.

## Shop network

The printers, the laser cutter and the CNC router are on the workshop VLAN 30
(192.168.30.0/24). The Home Assistant server has the fixed address 192.168.30.2. New
devices get an address from the DHCP pool 192.168.30.100 to 192.168.30.199.
""",
    CNC_WIKI: """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>CNC router feeds and speeds - workshop wiki</title>
<style>body { font-family: sans-serif; } nav a { margin-right: 1em; }</style>
<script>window.addEventListener("load", () => document.body.classList.add("ready"));</script>
</head>
<body>
<nav><a href="/">Home</a> <a href="/machines">Machines</a> <a href="/materials">Materials</a>
<a href="/login">Log in</a></nav>
<main>
<h1>CNC router feeds and speeds</h1>
<p>Starting values for our router: an 800 W water-cooled spindle from 6,000 to 24,000 rpm
with ER11 collets. Always start with these values and listen to the cut: a screaming
cutter is too fast, a cutter that rubs is too slow.</p>
<h2>Aluminium 6061</h2>
<p>Use single-flute carbide end mills made for aluminium and spray a little cutting fluid
or use the mist coolant. For a 6 mm single-flute end mill: 18,000 rpm, 900 mm/min feed,
0.5 mm depth of cut, 40 % stepover in adaptive clearing. Clear the chips with the air
blast: recutting chips breaks end mills.</p>
<h2>Plywood and MDF</h2>
<p>For a 6 mm two-flute compression bit: 16,000 rpm, 2,000 mm/min feed and 3 mm depth per
pass. Use tabs 6 mm wide and 2 mm high to hold the parts in the sheet. MDF dust is
harmful: run the dust extractor and wear an FFP2 mask.</p>
<h2>Acrylic</h2>
<p>Cast acrylic cuts cleanly with a single-flute O-flute bit: a 3 mm bit at 18,000 rpm and
1,200 mm/min. Extruded acrylic melts and welds back together behind the cutter; if chips
melt, raise the feed rather than lowering the speed.</p>
<h2>Workholding and zeroing</h2>
<p>Screw the workpiece to the spoilboard or use the cam clamps, never double-sided tape
for metal. Zero Z with the touch plate; the plate is 15 mm thick. Resurface the spoilboard
with the 25 mm surfacing bit when it is no longer flat.</p>
</main>
<footer>Last edited 2026-09-14 by Sam.</footer>
</body>
</html>
""",
    FIRE_PLAN: """\
WORKSHOP FIRE SAFETY PLAN

Extinguishers: a 5 kg CO2 extinguisher hangs next to the laser cutter, a 6 kg powder
extinguisher next to the main door, and a fire blanket next to the soldering bench.
The extinguishers are inspected every two years; the next inspection is due in
March 2027.

If there is a fire: shout "fire", switch off the main breaker by the door if you can
reach it safely, leave the building and call the fire brigade on 112. Do not fight a
fire bigger than a waste paper basket. The assembly point is the parking lot across the
street by the lamp post; count who is there.

Batteries: LiPo packs are charged only in the fireproof bag on the steel shelf, never
overnight. A swollen or damaged pack goes into the bucket of sand outside the back
door.

Housekeeping: empty the dust extractor bags every week, keep the solvent cabinet
closed, and put oily rags into the metal bin with the lid.
""",
}


def _fact(
    fact_id: str,
    file: str,
    answer: str,
    *questions: str,
    page: int | None = None,
    section: str | None = None,
) -> Fact:
    return Fact(fact_id, Place(file, page, section), answer, questions)


FACTS: tuple[Fact, ...] = (
    _fact(
        "mk4_serial_number",
        MK4,
        "have the serial number at hand, it is printed on a sticker at the back of the frame",
        "Where do I find the serial number of the MK4?",
        page=1,
    ),
    _fact(
        "mk4_cool_down",
        MK4,
        "let the hotend cool down below 50 °C before you change the nozzle",
        "How cool should the MK4 hotend be before I change the nozzle?",
        page=2,
    ),
    _fact(
        "mk4_allen_keys",
        MK4,
        "a set of Allen keys (1.5, 2, 2.5 and 3 mm)",
        "Which Allen keys come with the MK4?",
        page=3,
    ),
    _fact(
        "mk4_space_behind",
        MK4,
        "with at least 10 cm of free space behind it",
        "How much free space does the MK4 need behind it?",
        page=3,
    ),
    _fact(
        "mk4_build_volume",
        MK4,
        "The build volume is 250 × 210 × 220 mm.",
        "What is the build volume of the Prusa MK4?",
        "How big a part can the MK4 print?",
        page=4,
    ),
    _fact(
        "mk4_nozzle_max",
        MK4,
        "The maximum nozzle temperature is 300 °C.",
        "What is the maximum nozzle temperature of the MK4?",
        page=4,
    ),
    _fact(
        "mk4_weight",
        MK4,
        "the printer weighs 7 kg without the spool",
        "How much does the MK4 weigh?",
        page=4,
    ),
    _fact(
        "mk4_bed_max",
        MK4,
        "The heatbed reaches a maximum temperature of 120 °C.",
        "What's the max bed temperature of the Mk4?",
        "How hot does the MK4 heatbed get?",
        page=5,
    ),
    _fact(
        "mk4_power_supply",
        MK4,
        "The power supply delivers 240 W at 24 V.",
        "How powerful is the power supply of the MK4?",
        page=5,
    ),
    _fact(
        "mk4_wifi",
        MK4,
        "The Wi-Fi module works with 2.4 GHz networks only.",
        "Does the MK4 support 5 GHz Wi-Fi?",
        page=5,
    ),
    _fact(
        "mk4_first_layer_test",
        MK4,
        "Run the first layer test only after you have changed the nozzle or the steel sheet.",
        "When should I run the first layer test on the MK4?",
        page=6,
    ),
    _fact(
        "mk4_fingerprints",
        MK4,
        "fingerprints are the most common cause of poor adhesion",
        "Why do my prints not stick to the MK4 steel sheet?",
        page=6,
    ),
    _fact(
        "mk4_petg_preheat",
        MK4,
        "215 °C for PLA, 230 °C for PETG and 255 °C for ASA",
        "What does the MK4 preheat the nozzle to for PETG when loading filament?",
        page=7,
    ),
    _fact(
        "mk4_colour_change",
        MK4,
        "right-click the layer slider at the height where the colour should change",
        "How do I change the filament colour in the middle of a print on the MK4?",
        page=7,
    ),
    _fact(
        "mk4_lubrication",
        MK4,
        "with a thin layer of Prusa lubricant every 500 print hours",
        "How often should I lubricate the linear rods of the MK4?",
        page=8,
    ),
    _fact(
        "mk4_belt_frequency",
        MK4,
        "The Y belt should vibrate at 85 to 95 Hz.",
        "What frequency should the Y belt of the MK4 have?",
        page=8,
    ),
    _fact(
        "mk4_acetone",
        MK4,
        "Never use acetone on the textured sheet, it damages the coating.",
        "Can I clean the MK4 textured sheet with acetone?",
        page=8,
    ),
    _fact(
        "mk4_error_17505",
        MK4,
        "Error 17505 HEATBED THERMAL RUNAWAY: the bed temperature fell while heating was on.",
        "What does error 17505 mean on the MK4?",
        page=9,
    ),
    _fact(
        "mk4_hotend_fan_error",
        MK4,
        "Error 17301 HOTEND FAN ERROR: the hotend fan does not spin.",
        "What should I do about a hotend fan error on the MK4?",
        page=9,
    ),
    _fact(
        "mk4_firmware_update",
        MK4,
        "Download the firmware file (.bbf) from the Prusa website and copy it to the root of"
        " the USB drive.",
        "How do I update the firmware of the MK4?",
        page=10,
    ),
    _fact(
        "mk4_warranty",
        MK4,
        "The printer is covered by a 24-month warranty from the date of delivery.",
        "How long is the warranty on the MK4?",
        page=10,
    ),
    _fact(
        "ender_bed_max",
        ENDER,
        "The maximum hot bed temperature is 110 °C.",
        "What is the maximum bed temperature of the Ender-3 S1 Pro?",
        page=1,
    ),
    _fact(
        "ender_print_size",
        ENDER,
        "Printing size: 220 × 220 × 270 mm.",
        "What is the printing size of the Ender-3 S1 Pro?",
        page=1,
    ),
    _fact(
        "ender_voltage_switch",
        ENDER,
        "set the voltage switch on the power supply to match your mains: 115 V or 230 V",
        "What do I set the voltage switch of the Ender-3 S1 Pro to?",
        page=2,
    ),
    _fact(
        "ender_z_offset",
        ENDER,
        "lower the nozzle in 0.05 mm steps until you feel slight friction when moving the paper",
        "How do I set the Z offset on the Ender-3 S1 Pro?",
        page=3,
    ),
    _fact(
        "ender_error_e3",
        ENDER,
        "Error E3: the nozzle heats too slowly; check the heater cartridge.",
        "What does error E3 mean on the Ender-3?",
        page=5,
    ),
    _fact(
        "v6_max_temperature",
        HOTEND,
        "With the standard Semitec 104NT thermistor the E3D-V6 is rated for a maximum of 285 °C.",
        "What is the maximum temperature of the E3D-V6 hotend?",
        page=1,
    ),
    _fact(
        "v6_pt100",
        HOTEND,
        "Fit the PT100 temperature sensor upgrade to print up to 400 °C",
        "How can I print hotter than 285 °C with the V6 hotend?",
        page=1,
    ),
    _fact(
        "v6_groove_mount",
        HOTEND,
        "The heat sink has a standard groove mount 16 mm in diameter",
        "What mount does the E3D-V6 heat sink use?",
        page=1,
    ),
    _fact(
        "v6_heater_24v",
        HOTEND,
        "| PN-2045-B | Heater cartridge 24 V 40 W |",
        "Which heater cartridge do I order for a 24 V V6 hotend?",
        page=2,
    ),
    _fact(
        "v6_nozzle_thread",
        HOTEND,
        "The nozzle has an M6 thread with a 1 mm pitch.",
        "What thread does the E3D-V6 nozzle have?",
        page=3,
    ),
    _fact(
        "v6_hot_tighten",
        HOTEND,
        "Hold the heater block with a spanner and tighten the nozzle to 3 Nm.",
        "What torque do I tighten the V6 nozzle to?",
        page=3,
    ),
    _fact(
        "v6_heater_resistance",
        HOTEND,
        "A 24 V 40 W cartridge measures about 14.4 ohms",
        "What resistance should a 24 V 40 W heater cartridge have?",
        page=4,
    ),
    _fact(
        "v6_cold_pull",
        HOTEND,
        "heat to 250 °C, push filament through, cool to 90 °C and pull the filament out",
        "How do I do a cold pull on the E3D-V6?",
        page=4,
    ),
    _fact(
        "lc40_safety_glasses",
        LASER,
        "Wear safety glasses rated OD 5+ for 10.6 µm when you align the mirrors with the lid open.",
        "What safety glasses do I need for the LC-40 laser?",
        page=1,
    ),
    _fact(
        "lc40_work_area",
        LASER,
        "The work area is 400 × 300 mm",
        "How big is the work area of the LC-40 laser cutter?",
        page=2,
    ),
    _fact(
        "lc40_focal_length",
        LASER,
        "a focal length of 50.8 mm",
        "What is the focal length of the LC-40 lens?",
        page=2,
    ),
    _fact(
        "lc40_water_temperature",
        LASER,
        "Keep the cooling water between 15 and 25 °C.",
        "What temperature should the cooling water of the laser be?",
        page=3,
    ),
    _fact(
        "lc40_antifreeze",
        LASER,
        "add 20 % laboratory-grade antifreeze, or drain the circuit",
        "How do I protect the laser cutter from freezing in winter?",
        page=3,
    ),
    _fact(
        "lc40_focus_gauge",
        LASER,
        "put the 6 mm acrylic focus gauge on it under the lens",
        "How do I focus the LC-40 laser?",
        page=4,
    ),
    _fact(
        "lc40_pvc",
        LASER,
        "Never cut PVC, vinyl or artificial leather containing PVC: they release chlorine gas",
        "Can I cut PVC with the laser cutter?",
        page=5,
    ),
    _fact(
        "lc40_error_0x3f",
        LASER,
        "| 0x3F | Water flow interrupted |",
        "What does error 0x3F on the laser cutter mean?",
        page=6,
    ),
    _fact(
        "lc40_lid_code",
        LASER,
        "| 0x21 | Lid interlock open |",
        "Which error code does the LC-40 show when the lid is open?",
        page=6,
    ),
    _fact(
        "lc40_lens_cleaning",
        LASER,
        "Clean the lens and the three mirrors with a cotton swab and isopropyl alcohol once a week",
        "How often should I clean the lens and mirrors of the laser?",
        page=7,
    ),
    _fact(
        "lc40_tube_lifetime",
        LASER,
        "A CO2 tube lasts about 1500 hours of firing.",
        "How long does the LC-40 laser tube last?",
        page=7,
    ),
    _fact(
        "sp80_range",
        SOLDERING,
        "Temperature range: 200 to 480 °C.",
        "What temperature range does the SP-80 soldering station have?",
        page=1,
    ),
    _fact(
        "sp80_heat_up",
        SOLDERING,
        "The iron heats from room temperature to 350 °C in about 20 seconds.",
        "How fast does the SP-80 soldering iron heat up?",
        page=1,
    ),
    _fact(
        "sp80_lead_free",
        SOLDERING,
        "For lead-free solder set 350 °C",
        "What temperature should I use for lead-free solder?",
        page=2,
    ),
    _fact(
        "sp80_lock",
        SOLDERING,
        "Hold the UP and DOWN keys together for 3 seconds to lock the temperature",
        "How do I lock the temperature on the SP-80?",
        page=2,
    ),
    _fact(
        "sp80_sleep",
        SOLDERING,
        "When the iron rests in its stand for 10 minutes, the station lowers the tip"
        " temperature to 200 °C",
        "When does the SP-80 go into sleep mode?",
        page=2,
    ),
    _fact(
        "sp80_brass_wool",
        SOLDERING,
        "Clean the tip on brass wool rather than on a wet sponge",
        "Should I clean the soldering tip on a wet sponge or on brass wool?",
        page=3,
    ),
    _fact(
        "sp80_error_e2",
        SOLDERING,
        "E-2: the heater is open; replace the tip.",
        "What does E-2 mean on the soldering station?",
        page=4,
    ),
    _fact(
        "sp80_calibration_offset",
        SOLDERING,
        "The offset can be set within ±50 °C.",
        "How far can the calibration offset of the SP-80 be adjusted?",
        page=4,
    ),
    _fact(
        "pla_temperatures",
        FILAMENT,
        "It prints at 200-220 °C on a bed at 55-60 °C and needs no enclosure.",
        "What temperatures should I print PLA at?",
        page=1,
    ),
    _fact(
        "pla_softening",
        FILAMENT,
        "PLA softens at about 55 °C",
        "At what temperature does PLA get soft?",
        page=1,
    ),
    _fact(
        "petg_temperatures",
        FILAMENT,
        "Print it at 230-250 °C with the bed at 80-90 °C",
        "What nozzle and bed temperature should I use for PETG?",
        page=2,
    ),
    _fact(
        "petg_release_agent",
        FILAMENT,
        "apply a thin layer of glue stick or use a textured sheet as a release agent",
        "How do I stop PETG from sticking too hard to a PEI sheet?",
        page=2,
    ),
    _fact(
        "abs_enclosure",
        FILAMENT,
        "An enclosure is required: draughts cause warping and cracks between layers.",
        "Do I need an enclosure to print ABS?",
        page=3,
    ),
    _fact(
        "asa_outdoors",
        FILAMENT,
        "ASA also resists UV light and is the better choice for parts used outdoors.",
        "Which filament is best for parts used outdoors?",
        page=3,
    ),
    _fact(
        "tpu_speed",
        FILAMENT,
        "Print slowly, at 20-30 mm/s",
        "How fast should I print TPU?",
        page=4,
    ),
    _fact(
        "composite_nozzle",
        FILAMENT,
        "a brass nozzle wears out within a few hundred grams, so use a hardened steel nozzle",
        "Which nozzle do I need for carbon fibre filament?",
        page=5,
    ),
    _fact(
        "nylon_drying",
        FILAMENT,
        "| Nylon | 70 °C | 12 h |",
        "How long and at what temperature do I dry nylon filament?",
        page=6,
    ),
    _fact(
        "storage_humidity",
        FILAMENT,
        "keep the humidity below 20 %",
        "What humidity should filament be stored at?",
        page=6,
    ),
    _fact(
        "drone_motor_mounts",
        NOTES,
        "The printed motor mounts need 3 mm heat-set inserts",
        "What inserts do the drone motor mounts need?",
        section="Motor mounts",
    ),
    _fact(
        "drone_battery",
        NOTES,
        "Battery: 6S 1100 mAh LiPo with an XT60 connector.",
        "Which battery does the drone use?",
        section="Electronics",
    ),
    _fact(
        "compressor_drain",
        NOTES,
        "Drain the condensate from the tank every Friday",
        "How often do I drain the compressor tank?",
        section="Air compressor",
    ),
    _fact(
        "airbrush_pressure",
        NOTES,
        "and to 1.5 bar for the airbrush",
        "What pressure do I set for the airbrush?",
        section="Air compressor",
    ),
    _fact(
        "resin_cure",
        NOTES,
        "then cure them for 5 minutes at 60 °C under UV",
        "How long do resin prints need to cure?",
        section="Wash and cure",
    ),
    _fact(
        "resin_fep",
        NOTES,
        "replace it after about 30 prints",
        "When should I replace the FEP film of the resin printer?",
        section="Vat and FEP",
    ),
    _fact(
        "home_assistant_address",
        NOTES,
        "The Home Assistant server has the fixed address 192.168.30.2.",
        "What is the IP address of the Home Assistant server?",
        section="Shop network",
    ),
    _fact(
        "aluminium_feeds",
        CNC_WIKI,
        "For a 6 mm single-flute end mill: 18,000 rpm, 900 mm/min feed, 0.5 mm depth of cut",
        "What feed and speed do I use for a 6 mm end mill in aluminium?",
        section="Aluminium 6061",
    ),
    _fact(
        "plywood_tabs",
        CNC_WIKI,
        "Use tabs 6 mm wide and 2 mm high",
        "How big should the holding tabs be when I cut plywood on the CNC?",
        section="Plywood and MDF",
    ),
    _fact(
        "mdf_mask",
        CNC_WIKI,
        "run the dust extractor and wear an FFP2 mask",
        "What mask should I wear when milling MDF?",
        section="Plywood and MDF",
    ),
    _fact(
        "acrylic_melting",
        CNC_WIKI,
        "if chips melt, raise the feed rather than lowering the speed",
        "What do I do when acrylic melts on the CNC router?",
        section="Acrylic",
    ),
    _fact(
        "touch_plate",
        CNC_WIKI,
        "the plate is 15 mm thick",
        "How thick is the touch plate of the CNC router?",
        section="Workholding and zeroing",
    ),
    _fact(
        "co2_extinguisher",
        FIRE_PLAN,
        "a 5 kg CO2 extinguisher hangs next to the laser cutter",
        "Where is the CO2 fire extinguisher?",
    ),
    _fact(
        "lipo_charging",
        FIRE_PLAN,
        "LiPo packs are charged only in the fireproof bag on the steel shelf",
        "Where do we charge LiPo batteries?",
    ),
    _fact(
        "assembly_point",
        FIRE_PLAN,
        "The assembly point is the parking lot across the street by the lamp post",
        "Where is the assembly point in case of fire?",
    ),
)
