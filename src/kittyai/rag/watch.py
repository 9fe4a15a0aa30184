"""The watch folder: files dropped into `<share>/kitty/knowledge/` are ingested on their own.

The folder is polled every `watch_interval_s`: Samba shares and bind mounts do not
deliver inotify events reliably, and polling needs nothing beyond the standard
library. A file is read again when its modification time or size changed; its
content hash then decides whether anything is re-indexed. A file that disappeared
takes its document with it.

- Source: `share:kitty/knowledge/<path in the folder>`, kind `watch`.
- Collection: the first subfolder's name when it is a valid collection name
  (lower-case letters, digits, `-` and `_`), e.g. `printers/mk4.pdf`; otherwise,
  and for files at the top, `default`.
- Skipped: hidden files and folders (`.*`), partial downloads (`*.part`), editor
  and Office lock files (`~*`), links, and files changed in the last second (still
  being copied; the next poll takes them).
- A file that cannot be ingested (a corrupt or encrypted PDF, say) is logged once
  for its content, not on every poll, and never stops the other files.
- A missing or unreadable folder is a share that is not there (not mounted yet),
  not an empty one: nothing is deleted until it can be listed again.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, auto
import hashlib
import logging
import os
from pathlib import Path, PurePosixPath
import re
import stat
import time

from kittyai.contract.rag import DEFAULT_COLLECTION, NAME_PATTERN, IngestOutcome, SourceKind
from kittyai.rag.embedders import EmbedderError
from kittyai.rag.knowledge import KnowledgeBase
from kittyai.rag.parsing import DocumentError
from kittyai.rag.sources import SHARE_SOURCE_PREFIX

_LOGGER = logging.getLogger(__name__)

WATCH_FOLDER = PurePosixPath("kitty/knowledge")
# A file changed this recently may still be being written.
SETTLE_S = 1.0
_SKIPPED_PREFIXES = (".", "~")
_SKIPPED_SUFFIXES = (".part",)
_NAME = re.compile(NAME_PATTERN)
_WATCH_SOURCE_PREFIX = f"{SHARE_SOURCE_PREFIX}{WATCH_FOLDER}/"


class _Outcome(Enum):
    INDEXED = auto()
    # Too large, unreadable or not a document: logged, and left until it changes.
    SKIPPED = auto()
    # The embedder is down: the file, and the scan, wait for the next poll.
    INTERRUPTED = auto()


@dataclass(frozen=True, slots=True)
class FileState:
    """What tells a changed file from an unchanged one without reading it."""

    mtime_ns: int
    size: int


def collection_of(path: PurePosixPath) -> str:
    """Return the collection of a file at `path` in the watch folder."""
    if len(path.parts) > 1 and _NAME.fullmatch(path.parts[0]):
        return path.parts[0]
    return DEFAULT_COLLECTION


def watch_source(path: PurePosixPath) -> str:
    """Return the source of the file at `path` in the watch folder."""
    return f"{_WATCH_SOURCE_PREFIX}{path}"


class KnowledgeWatcher:
    """Keeps the knowledge base in step with the watch folder."""

    def __init__(
        self,
        *,
        knowledge: KnowledgeBase,
        share_dir: Path,
        interval_s: float,
        max_bytes: int,
        on_change: Callable[[], None],
    ) -> None:
        """Watch `share_dir/kitty/knowledge`; call `on_change` after documents changed."""
        self._knowledge = knowledge
        self.folder = share_dir / WATCH_FOLDER
        self._interval_s = interval_s
        self._max_bytes = max_bytes
        self._on_change = on_change
        # Files as last looked at; unchanged ones are not read again.
        self._seen: dict[PurePosixPath, FileState] = {}
        # Files that have a document; None until the first scan asked the knowledge base.
        self._indexed: set[PurePosixPath] | None = None
        # The content hash each failing file failed with: logged once, not every poll.
        self._failed: dict[PurePosixPath, str] = {}
        # Why the last scan stopped early (the embedder is down), logged once per outage.
        self._interruption: str | None = None
        self._folder_problem: str | None = None

    async def prepare(self) -> bool:
        """Create the watch folder; False (logged) when the share does not allow it."""
        try:
            await asyncio.to_thread(self.folder.mkdir, parents=True, exist_ok=True)
        except OSError as err:
            _LOGGER.warning(
                "Not watching: cannot create the watch folder %s: %s", self.folder, err.strerror
            )
            return False
        return True

    async def run_forever(self) -> None:
        """Scan now, then every interval."""
        while True:
            try:
                await self.scan()
            except Exception:
                # The next poll tries again: watching must outlive one bad scan.
                _LOGGER.exception("Scanning the watch folder %s failed", self.folder)
            await asyncio.sleep(self._interval_s)

    async def scan(self) -> None:
        """Ingest new and changed files, and delete the documents of removed ones."""
        try:
            files = await asyncio.to_thread(_list_files, self.folder)
        except OSError as err:
            problem = f"{err.strerror}: {err.filename}"
            if problem != self._folder_problem:
                _LOGGER.warning("Cannot list the watch folder %s (%s)", self.folder, problem)
                self._folder_problem = problem
            return
        self._folder_problem = None
        if self._indexed is None:
            self._indexed = await self._watched_documents()
        indexed = self._indexed
        for path in sorted(indexed - files.keys()):
            await self._knowledge.delete_source(watch_source(path))
            indexed.discard(path)
            _LOGGER.info("Removed %s: its file is gone", watch_source(path))
            self._on_change()
        for path in list(self._seen.keys() - files.keys()):
            del self._seen[path]
            self._failed.pop(path, None)
        settled_before = time.time_ns() - int(SETTLE_S * 1e9)
        for path, state in sorted(files.items()):
            if self._seen.get(path) == state or state.mtime_ns > settled_before:
                continue
            outcome = await self._ingest(path, state)
            if outcome is _Outcome.INTERRUPTED:
                # Left unseen: the next poll tries this file, and the rest, again.
                return
            self._seen[path] = state
            if outcome is _Outcome.INDEXED:
                indexed.add(path)
        self._interruption = None

    async def _watched_documents(self) -> set[PurePosixPath]:
        # Every document there is, whatever its kind: a file of the watch folder may
        # also have been ingested by its path (kind `share`, the same source).
        documents = await self._knowledge.documents(limit=None)
        return {
            PurePosixPath(document.source.removeprefix(_WATCH_SOURCE_PREFIX))
            for document in documents
            if document.source.startswith(_WATCH_SOURCE_PREFIX)
        }

    async def _read(self, path: PurePosixPath, state: FileState) -> bytes | None:
        """Return the file's content; None (logged) when it is too large or unreadable."""
        if state.size > self._max_bytes:
            _LOGGER.warning(
                "Skipping %s: it is larger than the %g MB a document may have",
                watch_source(path),
                self._max_bytes / 1_048_576,
            )
            return None
        try:
            return await asyncio.to_thread((self.folder / path).read_bytes)
        except OSError as err:
            _LOGGER.warning("Cannot read %s: %s", watch_source(path), err.strerror)
            return None

    async def _ingest(self, path: PurePosixPath, state: FileState) -> _Outcome:
        content = await self._read(path, state)
        if content is None:
            return _Outcome.SKIPPED
        source = watch_source(path)
        digest = hashlib.sha256(content).hexdigest()
        if self._failed.get(path) == digest:
            return _Outcome.SKIPPED
        try:
            result = await self._knowledge.ingest(
                content,
                source=source,
                source_kind=SourceKind.WATCH,
                name=path.name,
                collection=collection_of(path),
            )
        except DocumentError as err:
            self._failed[path] = digest
            _LOGGER.warning("Cannot ingest %s: %s (%s)", source, err.message, err.code)
            return _Outcome.SKIPPED
        except EmbedderError as err:
            if str(err) != self._interruption:
                _LOGGER.warning("Watch folder ingest paused: %s", err)
                self._interruption = str(err)
            return _Outcome.INTERRUPTED
        except Exception:
            self._failed[path] = digest
            _LOGGER.exception("Ingesting %s failed", source)
            return _Outcome.SKIPPED
        self._failed.pop(path, None)
        if result.outcome is not IngestOutcome.UNCHANGED:
            self._on_change()
        return _Outcome.INDEXED


def _list_files(folder: Path) -> dict[PurePosixPath, FileState]:
    """Return the watchable files under `folder`, by path relative to it."""

    def fail(err: OSError) -> None:
        # An unreadable subfolder is no empty one: its documents must stay.
        raise err

    if not folder.is_dir():
        raise FileNotFoundError(2, "No such folder", str(folder))
    files = {}
    for directory, subfolders, names in os.walk(folder, onerror=fail):
        subfolders[:] = [name for name in subfolders if not _skipped(name)]
        for name in names:
            if _skipped(name):
                continue
            path = Path(directory, name)
            try:
                status = path.lstat()
            except FileNotFoundError:
                continue  # removed since the folder was listed
            # Regular files only: no links, devices or FIFOs.
            if stat.S_ISREG(status.st_mode):
                relative = PurePosixPath(path.relative_to(folder).as_posix())
                files[relative] = FileState(status.st_mtime_ns, status.st_size)
    return files


def _skipped(name: str) -> bool:
    return name.startswith(_SKIPPED_PREFIXES) or name.endswith(_SKIPPED_SUFFIXES)
