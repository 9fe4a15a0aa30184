"""The watch folder of a real knowledge service process, polled every second."""

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
import os
from pathlib import Path
import time

import aiohttp
import pytest

from kittyai.contract.rag import DocumentInfo, SourceKind
from tests.helpers.knowledge_corpus import (
    write_corrupt_pdf,
    write_encrypted_pdf,
    write_manual_pdf,
)
from tests.helpers.services import ServiceProcess
from tests.lib.rag.conftest import RagApi, share_of, start_rag_service

# A poll every second, files left alone for a second while they may still be written.
SEEN_WITHIN_S = 15.0
PREFIX = "share:kitty/knowledge/"


@pytest.fixture(scope="module")
def rag(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    process = start_rag_service(tmp_path_factory.mktemp("watch"))
    yield process
    process.stop()


@pytest.fixture
async def client(rag: ServiceProcess) -> AsyncIterator[RagApi]:
    async with aiohttp.ClientSession() as session:
        yield RagApi(rag, session)


@pytest.fixture
def folder(rag: ServiceProcess) -> Path:
    return share_of(rag) / "kitty" / "knowledge"


async def watched(client: RagApi) -> dict[str, DocumentInfo]:
    """Return the documents of the watch folder by path in it."""
    listed = await client.get("/api/documents", kind="watch", limit="1000")
    return {
        item["source"].removeprefix(PREFIX): DocumentInfo.model_validate(item)
        for item in listed["documents"]
    }


async def wait_for_documents(
    client: RagApi, check: Callable[[dict[str, DocumentInfo]], bool]
) -> dict[str, DocumentInfo]:
    """Poll the watch folder's documents until `check(documents)` holds, and return them."""
    deadline = time.monotonic() + SEEN_WITHIN_S
    while not check(documents := await watched(client)):
        assert time.monotonic() < deadline, f"the watch folder holds {sorted(documents)}"
        await asyncio.sleep(0.2)
    return documents


def log_lines(process: ServiceProcess, text: str) -> int:
    return sum(text in line for line in process.log().splitlines())


async def test_dropped_files_are_ingested_with_their_subfolder_as_collection(
    client: RagApi, folder: Path
) -> None:
    (folder / "printers").mkdir()
    (folder / "Shop Notes").mkdir()
    (folder / ".git").mkdir()
    write_manual_pdf(
        folder / "printers" / "mk4.pdf",
        [["# 1 Heatbed", "The heatbed reaches 120 °C."], ["# 2 Nozzle", "The nozzle: 290 °C."]],
        "MK4",
    )
    (folder / "workbench.md").write_text("# Workbench\n\nThe bench is 180 cm long.\n")
    (folder / "Shop Notes" / "vise.txt").write_text("The vise opens 150 mm.")
    for skipped in [".hidden.md", "download.pdf.part", "~$report.md", ".git/notes.md"]:
        (folder / skipped).write_text("# Not for KITTY\n\nSkipped.\n")

    documents = await wait_for_documents(
        client,
        lambda found: {"printers/mk4.pdf", "workbench.md", "Shop Notes/vise.txt"} <= found.keys(),
    )

    assert documents["printers/mk4.pdf"].collection == "printers"
    assert documents["printers/mk4.pdf"].pages == 2
    # "Shop Notes" is no collection name: the file goes to the default collection.
    assert documents["Shop Notes/vise.txt"].collection == "default"
    assert documents["workbench.md"].collection == "default"
    assert {document.source_kind for document in documents.values()} == {SourceKind.WATCH}
    [hit] = (await client.search("bed temperature", collection="printers", limit=1)).hits
    assert (hit.source, hit.page) == (f"{PREFIX}printers/mk4.pdf", 1)
    # Polls later, the skipped files are still not there.
    await asyncio.sleep(2.5)
    assert (
        not {".hidden.md", "download.pdf.part", "~$report.md", ".git/notes.md"}
        & (await watched(client)).keys()
    )


async def test_a_changed_file_replaces_its_chunks_and_a_removed_one_is_forgotten(
    client: RagApi, folder: Path
) -> None:
    path = folder / "lathe.md"
    path.write_text("# Lathe\n\nThe chuck takes 100 mm stock.\n")
    first = (await wait_for_documents(client, lambda found: "lathe.md" in found))["lathe.md"]

    path.write_text("# Lathe\n\nThe chuck takes 125 mm stock since the upgrade.\n")
    changed = await wait_for_documents(
        client, lambda found: found["lathe.md"].content_hash != first.content_hash
    )
    hits = (await client.search("chuck stock", source=f"{PREFIX}lathe.md")).hits
    path.unlink()
    await wait_for_documents(client, lambda found: "lathe.md" not in found)

    assert changed["lathe.md"].collection == "default"
    assert [hit.text for hit in hits] == ["The chuck takes 125 mm stock since the upgrade."]
    assert (await client.search("chuck stock", source=f"{PREFIX}lathe.md")).hits == []


async def test_unreadable_pdfs_are_logged_once_and_do_not_stop_the_other_files(
    client: RagApi, folder: Path, rag: ServiceProcess
) -> None:
    (folder / "bad").mkdir()
    write_corrupt_pdf(folder / "bad" / "broken.pdf")
    write_encrypted_pdf(folder / "bad" / "locked.pdf")
    # Last in the folder: read after both PDFs failed.
    (folder / "bad" / "zz-good.md").write_text(
        "# Drill press\n\nThe drill press runs at 580 rpm.\n"
    )

    await wait_for_documents(client, lambda found: "bad/zz-good.md" in found)
    # Touched, same content: read again, but not logged again.
    os.utime(folder / "bad" / "broken.pdf")
    await asyncio.sleep(3.5)

    broken = log_lines(rag, "Cannot ingest share:kitty/knowledge/bad/broken.pdf")
    locked = log_lines(rag, "Cannot ingest share:kitty/knowledge/bad/locked.pdf")
    assert (broken, locked) == (1, 1)
    assert log_lines(rag, "(corrupt_document)") == log_lines(rag, "(encrypted_document)") == 1
    assert not {"bad/broken.pdf", "bad/locked.pdf"} & (await watched(client)).keys()
    for name, code in [("broken.pdf", "corrupt_document"), ("locked.pdf", "encrypted_document")]:
        answer = await client.call(
            "POST", "/api/ingest", json_body={"path": f"kitty/knowledge/bad/{name}"}
        )
        assert (answer.status, answer.code) == (422, code)
        assert name in answer.body["error"]["message"]


async def test_files_removed_while_the_service_was_stopped_are_forgotten_at_start(
    client: RagApi, folder: Path, rag: ServiceProcess
) -> None:
    (folder / "tools").mkdir()
    (folder / "tools" / "saw.md").write_text("# Saw\n\nThe band saw blade is 1712 mm.\n")
    (folder / "tools" / "sander.md").write_text("# Sander\n\nUse 120 grit belts first.\n")
    before = await wait_for_documents(
        client, lambda found: {"tools/saw.md", "tools/sander.md"} <= found.keys()
    )

    assert rag.stop() == 0
    (folder / "tools" / "saw.md").unlink()
    await asyncio.to_thread(rag.start)
    after = await wait_for_documents(client, lambda found: "tools/saw.md" not in found)

    # The rest was not ingested again: same documents, same times.
    assert after == {path: document for path, document in before.items() if path != "tools/saw.md"}
