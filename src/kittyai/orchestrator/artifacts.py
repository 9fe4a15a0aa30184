"""Artifact files: under `<data_dir>/runs/<run id>/`, written atomically, indexed in the store.

A step's file is `<step index>-<name>`, a run's own (its log, its rollback log)
`run-<name>`. Names are reduced to letters, digits, `.`, `_` and `-`, so a name a
template or a worker made up cannot climb out of the run's folder. A file is written
beside its final name and renamed over it, so a reader (or a crash) sees the old
file or the new one, whole. Retention removes the files of runs that finished long
enough ago; their records stay, marked unavailable.
"""

import asyncio
from datetime import timedelta
import hashlib
import logging
import os
from pathlib import Path
import re
import shutil

from kittyai.contract.orchestrator import ArtifactInfo, ArtifactKind, RunErrorCode
from kittyai.orchestrator.database import utc_now
from kittyai.orchestrator.engine import RunError
from kittyai.orchestrator.store import NewArtifact, RunStore

_LOGGER = logging.getLogger(__name__)

RUNS_DIR = "runs"
RUN_FILE_PREFIX = "run"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 120


def safe_name(name: str) -> str:
    """Return `name` as a plain file name: no folders, no leading dots, at most 120 characters."""
    cleaned = _UNSAFE.sub("_", name.rsplit("/", 1)[-1]).lstrip(".")[:_MAX_NAME]
    return cleaned or "artifact"


class ArtifactStore:
    """Writes, reads and prunes the artifact files of runs."""

    def __init__(self, data_dir: Path, store: RunStore) -> None:
        """Keep files under `data_dir/runs` and their records in `store`."""
        self._root = data_dir / RUNS_DIR
        self._store = store

    def run_dir(self, run_id: str) -> Path:
        """Return the folder of a run's files."""
        return self._root / safe_name(run_id)

    async def write(
        self,
        run_id: str,
        step: int | None,
        name: str,
        data: bytes,
        *,
        kind: ArtifactKind,
        media_type: str,
    ) -> ArtifactInfo:
        """Store `data` as an artifact of step `step` (None: of the run itself)."""
        clean = safe_name(name)
        file = f"{RUN_FILE_PREFIX if step is None else step}-{clean}"
        digest = await asyncio.to_thread(self._write_file, self.run_dir(run_id), file, data)
        return await self._store.put_artifact(
            NewArtifact(
                run_id=run_id,
                step=step,
                name=clean,
                file=file,
                kind=kind,
                media_type=media_type,
                size=len(data),
                sha256=digest,
            )
        )

    @staticmethod
    def _write_file(folder: Path, file: str, data: bytes) -> str:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / file
        partial = folder / f".{file}.partial"
        with partial.open("wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        partial.replace(target)
        return hashlib.sha256(data).hexdigest()

    async def file(self, run_id: str, artifact_id: str) -> tuple[ArtifactInfo, Path]:
        """Return an artifact and its file; RunError ARTIFACT_NOT_FOUND if it is gone."""
        stored = await self._store.artifact(run_id, artifact_id)
        path = self.run_dir(run_id) / stored.file
        if not stored.info.available or not await asyncio.to_thread(path.is_file):
            raise RunError(
                RunErrorCode.ARTIFACT_NOT_FOUND,
                f"the file of artifact {artifact_id} was removed by the retention policy",
            )
        return stored.info, path

    async def read(self, run_id: str, artifact_id: str) -> bytes:
        """Return the bytes of an artifact of run `run_id`."""
        _info, path = await self.file(run_id, artifact_id)
        return await asyncio.to_thread(path.read_bytes)

    def sink(self, run_id: str, step: int) -> StepArtifacts:
        """Return where step `step` of run `run_id` keeps its files."""
        return StepArtifacts(self, run_id, step)

    async def prune(self, retention_days: float) -> int:
        """Remove the files of runs finished more than `retention_days` ago; return how many."""
        expired = await self._store.expired_artifacts(utc_now() - timedelta(days=retention_days))
        removed = await asyncio.to_thread(self._remove, [(a.info.run_id, a.file) for a in expired])
        await self._store.mark_unavailable(a.info.id for a in expired)
        if expired:
            _LOGGER.info("Retention removed %d artifact files", len(expired))
        return removed

    def _remove(self, files: list[tuple[str, str]]) -> int:
        removed = 0
        folders = set()
        for run_id, file in files:
            folder = self.run_dir(run_id)
            folders.add(folder)
            try:
                (folder / file).unlink()
                removed += 1
            except FileNotFoundError:
                pass
        for folder in folders:
            # Only folders left empty (partial files of a crash go with them).
            if folder.is_dir() and all(entry.name.startswith(".") for entry in folder.iterdir()):
                shutil.rmtree(folder, ignore_errors=True)
        return removed


class StepArtifacts:
    """The `ArtifactSink` of one step: writes under its index, reads its run's artifacts."""

    def __init__(self, artifacts: ArtifactStore, run_id: str, step: int) -> None:
        """Write for step `step` of run `run_id`."""
        self._artifacts = artifacts
        self._run_id = run_id
        self._step = step

    async def write(
        self, name: str, data: bytes, *, kind: ArtifactKind, media_type: str
    ) -> ArtifactInfo:
        """Store `data` as an artifact of this step."""
        return await self._artifacts.write(
            self._run_id, self._step, name, data, kind=kind, media_type=media_type
        )

    async def read(self, artifact_id: str) -> bytes:
        """Return the bytes of an artifact of this run."""
        return await self._artifacts.read(self._run_id, artifact_id)
