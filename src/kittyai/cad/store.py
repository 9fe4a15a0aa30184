"""The CAD service's durable state: its jobs, and the lineage store of its artifacts.

One SQLite file holds both. Jobs change as they run and are kept so that a restart
resumes them. Artifacts never change once written: SQLite triggers abort any UPDATE
or DELETE, so a child can never rewrite the parent it was made from.
"""

from datetime import UTC, datetime
import json
import secrets
import sqlite3

from pydantic import TypeAdapter

from kittyai.contract.cad import (
    Artifact,
    ArtifactFile,
    CadJob,
    GenerateRequest,
    JobState,
    VariantResult,
)
from kittyai.sqlite import SqliteStore, from_epoch_us, to_epoch_us, transaction

ID_BYTES = 8
DEFAULT_LIST_LIMIT = 20
MAX_LIST_LIMIT = 200
UNFINISHED_STATES = (JobState.QUEUED, JobState.RUNNING)

# Migration N brings the schema from `PRAGMA user_version` N-1 to N; append, never edit.
_MIGRATIONS = (
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        progress REAL NOT NULL,
        request TEXT NOT NULL,
        variants TEXT NOT NULL,
        error TEXT,
        -- UTC, in whole microseconds since the epoch: exact, and ordered like time.
        created_at_us INTEGER NOT NULL,
        updated_at_us INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX jobs_by_state ON jobs (state, created_at_us);
    CREATE TABLE artifacts (
        id TEXT PRIMARY KEY,
        job_id TEXT NOT NULL REFERENCES jobs (id),
        parent_id TEXT REFERENCES artifacts (id),
        variant INTEGER NOT NULL,
        prompt TEXT,
        provider TEXT NOT NULL,
        family TEXT,
        parameters TEXT NOT NULL,
        script TEXT,
        conversation_id TEXT,
        printer TEXT NOT NULL,
        material TEXT NOT NULL,
        metrics TEXT NOT NULL,
        slice TEXT,
        -- Name, kind, size and sha256 of each file.
        files TEXT NOT NULL,
        created_at_us INTEGER NOT NULL
    ) STRICT;
    -- One artifact per variant of a job: a resumed job cannot make a variant twice.
    CREATE UNIQUE INDEX artifacts_by_job ON artifacts (job_id, variant);
    CREATE INDEX artifacts_by_parent ON artifacts (parent_id);
    CREATE INDEX artifacts_by_conversation ON artifacts (conversation_id, created_at_us);
    CREATE INDEX artifacts_by_time ON artifacts (created_at_us);
    CREATE TRIGGER artifacts_never_update BEFORE UPDATE ON artifacts
    BEGIN
        SELECT RAISE(ABORT, 'artifacts are insert-only');
    END;
    CREATE TRIGGER artifacts_never_delete BEFORE DELETE ON artifacts
    BEGIN
        SELECT RAISE(ABORT, 'artifacts are insert-only');
    END;
    """,
)
_VARIANTS = TypeAdapter(list[VariantResult])
_FILES = TypeAdapter(list[ArtifactFile])
_INSERT_JOB = (
    "INSERT INTO jobs (id, state, progress, request, variants, error, created_at_us,"
    " updated_at_us) VALUES (:id, :state, :progress, :request, :variants, :error,"
    " :created_at_us, :updated_at_us)"
)
_UPDATE_JOB = (
    "UPDATE jobs SET state = :state, progress = :progress, variants = :variants,"
    " error = :error, updated_at_us = :updated_at_us WHERE id = :id"
)
_INSERT_ARTIFACT = (
    "INSERT INTO artifacts (id, job_id, parent_id, variant, prompt, provider, family,"
    " parameters, script, conversation_id, printer, material, metrics, slice, files,"
    " created_at_us) VALUES (:id, :job_id, :parent_id, :variant, :prompt, :provider, :family,"
    " :parameters, :script, :conversation_id, :printer, :material, :metrics, :slice, :files,"
    " :created_at_us)"
)
_SELECT_JOB = "SELECT * FROM jobs WHERE id = ?"
_SELECT_UNFINISHED_JOBS = "SELECT * FROM jobs WHERE state IN (?, ?) ORDER BY created_at_us, rowid"
_SELECT_ARTIFACT = "SELECT * FROM artifacts WHERE id = ?"
_SELECT_NEWEST = "SELECT * FROM artifacts ORDER BY created_at_us DESC, rowid DESC LIMIT ?"
_SELECT_NEWEST_OF_CONVERSATION = (
    "SELECT * FROM artifacts WHERE conversation_id = ?"
    " ORDER BY created_at_us DESC, rowid DESC LIMIT ?"
)
_SELECT_ANCESTORS = """
    WITH RECURSIVE lineage (id, depth) AS (
        SELECT parent_id, 1 FROM artifacts WHERE id = ? AND parent_id IS NOT NULL
        UNION ALL
        SELECT artifacts.parent_id, lineage.depth + 1
        FROM artifacts JOIN lineage ON artifacts.id = lineage.id
        WHERE artifacts.parent_id IS NOT NULL
    )
    SELECT artifacts.* FROM lineage JOIN artifacts ON artifacts.id = lineage.id
    ORDER BY lineage.depth
"""
_SELECT_CHILDREN = "SELECT * FROM artifacts WHERE parent_id = ? ORDER BY created_at_us, rowid"


def new_id() -> str:
    """Return a fresh random id for a job or an artifact."""
    return secrets.token_hex(ID_BYTES)


class CadStore(SqliteStore):
    """The jobs and the artifacts of one CAD service."""

    migrations = _MIGRATIONS
    thread_name = "cad-store"

    async def create_job(self, request: GenerateRequest) -> CadJob:
        """Store a new queued job for `request` and return it."""
        now = datetime.now(UTC)
        job = CadJob(
            id=new_id(),
            state=JobState.QUEUED,
            progress=0.0,
            request=request,
            variants=[
                VariantResult(variant=variant, state=JobState.QUEUED)
                for variant in range(request.variants)
            ],
            created_at=now,
            updated_at=now,
        )
        await self._database.run(_execute, _INSERT_JOB, _job_row(job))
        return job

    async def update_job(self, job: CadJob) -> None:
        """Store the state, progress, variants and error of `job`."""
        await self._database.run(_execute, _UPDATE_JOB, _job_row(job))

    async def get_job(self, job_id: str) -> CadJob | None:
        """Return the job with `job_id`, or None."""
        jobs = await self._database.run(_select_jobs, _SELECT_JOB, (job_id,))
        return jobs[0] if jobs else None

    async def unfinished_jobs(self) -> list[CadJob]:
        """Return the queued and running jobs, oldest first."""
        states = tuple(state.value for state in UNFINISHED_STATES)
        return await self._database.run(_select_jobs, _SELECT_UNFINISHED_JOBS, states)

    async def add_artifact(self, artifact: Artifact, job: CadJob | None = None) -> None:
        """Store `artifact`, and with `job` the job's new state in the same transaction.

        Together, a crash can never leave an artifact its job does not know about.
        Raise `sqlite3.IntegrityError` if the id or the job's variant already has one.
        """
        await self._database.run(_insert_artifact, artifact, job)

    async def get_artifact(self, artifact_id: str) -> Artifact | None:
        """Return the artifact with `artifact_id`, or None."""
        artifacts = await self._database.run(_select_artifacts, _SELECT_ARTIFACT, (artifact_id,))
        return artifacts[0] if artifacts else None

    async def list_artifacts(
        self, *, limit: int = DEFAULT_LIST_LIMIT, conversation_id: str | None = None
    ) -> list[Artifact]:
        """Return the newest `limit` artifacts, of one conversation when given, newest first."""
        if conversation_id is None:
            return await self._database.run(_select_artifacts, _SELECT_NEWEST, (limit,))
        return await self._database.run(
            _select_artifacts, _SELECT_NEWEST_OF_CONVERSATION, (conversation_id, limit)
        )

    async def ancestors(self, artifact_id: str) -> list[Artifact]:
        """Return the artifact's parent, its parent's parent and so on, parent first."""
        return await self._database.run(_select_artifacts, _SELECT_ANCESTORS, (artifact_id,))

    async def children(self, artifact_id: str) -> list[Artifact]:
        """Return the artifacts made from this one, oldest first."""
        return await self._database.run(_select_artifacts, _SELECT_CHILDREN, (artifact_id,))


def _execute(connection: sqlite3.Connection, statement: str, values: dict[str, object]) -> None:
    connection.execute(statement, values)


def _job_row(job: CadJob) -> dict[str, object]:
    return {
        "id": job.id,
        "state": job.state.value,
        "progress": job.progress,
        "request": job.request.model_dump_json(),
        "variants": _VARIANTS.dump_json(job.variants).decode(),
        "error": job.error,
        "created_at_us": to_epoch_us(job.created_at),
        "updated_at_us": to_epoch_us(job.updated_at),
    }


def _select_jobs(
    connection: sqlite3.Connection, query: str, values: tuple[object, ...]
) -> list[CadJob]:
    return [
        CadJob(
            id=row["id"],
            state=JobState(row["state"]),
            progress=row["progress"],
            request=GenerateRequest.model_validate_json(row["request"]),
            variants=_VARIANTS.validate_json(row["variants"]),
            error=row["error"],
            created_at=from_epoch_us(row["created_at_us"]),
            updated_at=from_epoch_us(row["updated_at_us"]),
        )
        for row in connection.execute(query, values).fetchall()
    ]


def _insert_artifact(
    connection: sqlite3.Connection, artifact: Artifact, job: CadJob | None
) -> None:
    row = {
        **artifact.model_dump(
            mode="json", exclude={"parameters", "metrics", "slice", "files", "created_at"}
        ),
        "parameters": json.dumps(artifact.parameters),
        "metrics": artifact.metrics.model_dump_json(),
        "slice": artifact.slice.model_dump_json() if artifact.slice is not None else None,
        "files": _FILES.dump_json(artifact.files).decode(),
        "created_at_us": to_epoch_us(artifact.created_at),
    }
    with transaction(connection):
        connection.execute(_INSERT_ARTIFACT, row)
        if job is not None:
            connection.execute(_UPDATE_JOB, _job_row(job))


def _select_artifacts(
    connection: sqlite3.Connection, query: str, values: tuple[object, ...]
) -> list[Artifact]:
    artifacts = []
    for row in connection.execute(query, values).fetchall():
        fields = dict(row)
        for name in ("parameters", "metrics", "slice", "files"):
            if fields[name] is not None:
                fields[name] = json.loads(fields[name])
        fields["created_at"] = from_epoch_us(fields.pop("created_at_us"))
        artifacts.append(Artifact.model_validate(fields))
    return artifacts
