"""The CAD store on a real SQLite file: durable jobs, insert-only artifacts, lineage."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
import sqlite3

import pytest

from kittyai.cad.store import CadStore, new_id
from kittyai.contract.cad import (
    Artifact,
    ArtifactFile,
    CadJob,
    FileKind,
    GenerateRequest,
    JobState,
    Material,
    PartMetrics,
    ProviderName,
    VariantResult,
)

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CadStore]:
    store = await CadStore.open(tmp_path / "cad.sqlite3")
    yield store
    await store.close()


def artifact(
    job: CadJob,
    *,
    variant: int = 0,
    parent: Artifact | None = None,
    conversation_id: str | None = None,
    height: float = 10.0,
    minutes: int = 0,
) -> Artifact:
    return Artifact(
        id=new_id(),
        job_id=job.id,
        parent_id=parent.id if parent is not None else None,
        variant=variant,
        prompt="a box",
        provider=ProviderName.PARAMETRIC,
        family="box",
        parameters={"width": 40.0, "height": height, "lid": False},
        conversation_id=conversation_id,
        printer="generic",
        material=Material.PETG,
        metrics=PartMetrics(
            volume_mm3=40 * 30 * height, bbox_mm=(40, 30, height), mass_g=1.5, solids=1
        ),
        files=[ArtifactFile(kind=FileKind.STL, name="part.stl", size=684, sha256="ab" * 32)],
        created_at=T0 + timedelta(minutes=minutes),
    )


async def new_job(store: CadStore, variants: int = 1) -> CadJob:
    return await store.create_job(GenerateRequest(prompt="a box", family="box", variants=variants))


async def test_a_job_survives_reopening_with_its_variants_and_progress(tmp_path: Path) -> None:
    path = tmp_path / "cad.sqlite3"
    store = await CadStore.open(path)
    job = await new_job(store, variants=2)
    job.state = JobState.RUNNING
    job.progress = 0.5
    job.variants[0] = VariantResult(
        variant=0, state=JobState.DONE, provider=ProviderName.PARAMETRIC, artifact_id="a" * 16
    )
    await store.update_job(job)
    await store.close()

    reopened = await CadStore.open(path)
    try:
        stored = await reopened.get_job(job.id)
        assert stored == job
        assert [unfinished.id for unfinished in await reopened.unfinished_jobs()] == [job.id]
    finally:
        await reopened.close()


async def test_unfinished_jobs_are_the_queued_and_running_ones_oldest_first(
    store: CadStore,
) -> None:
    first, second, third = [await new_job(store) for _ in range(3)]
    second.state = JobState.DONE
    await store.update_job(second)
    third.state = JobState.RUNNING
    await store.update_job(third)

    assert [job.id for job in await store.unfinished_jobs()] == [first.id, third.id]
    assert await store.get_job("0" * 16) is None


async def test_an_artifact_reads_back_exactly_as_stored(store: CadStore) -> None:
    job = await new_job(store)
    made = artifact(job, conversation_id="conv-1")

    await store.add_artifact(made)

    assert await store.get_artifact(made.id) == made
    assert await store.get_artifact(new_id()) is None


async def test_artifacts_can_be_neither_updated_nor_deleted(
    store: CadStore, tmp_path: Path
) -> None:
    job = await new_job(store)
    made = artifact(job)
    await store.add_artifact(made)

    # Straight at the file, as any other program could: the triggers guard the table.
    connection = sqlite3.connect(tmp_path / "cad.sqlite3")
    try:
        with pytest.raises(sqlite3.IntegrityError, match="artifacts are insert-only"):
            connection.execute("UPDATE artifacts SET family = 'bracket' WHERE id = ?", (made.id,))
        with pytest.raises(sqlite3.IntegrityError, match="artifacts are insert-only"):
            connection.execute("DELETE FROM artifacts WHERE id = ?", (made.id,))
    finally:
        connection.close()
    assert await store.get_artifact(made.id) == made


async def test_a_variant_of_a_job_gets_one_artifact_only(store: CadStore) -> None:
    job = await new_job(store)
    await store.add_artifact(artifact(job, variant=0))

    with pytest.raises(sqlite3.IntegrityError):
        await store.add_artifact(artifact(job, variant=0))


async def test_an_artifact_and_its_job_change_together_or_not_at_all(store: CadStore) -> None:
    job = await new_job(store)
    first = artifact(job)
    job.variants[0] = VariantResult(
        variant=0, state=JobState.DONE, provider=ProviderName.PARAMETRIC, artifact_id=first.id
    )
    await store.add_artifact(first, job)
    assert (await store.get_job(job.id)) == job

    # The second insert breaks the one-per-variant rule: the job update is rolled back.
    job.state = JobState.FAILED
    with pytest.raises(sqlite3.IntegrityError):
        await store.add_artifact(artifact(job), job)
    stored = await store.get_job(job.id)
    assert stored is not None
    assert stored.state is JobState.QUEUED


async def test_an_artifact_needs_an_existing_parent(store: CadStore) -> None:
    job = await new_job(store)
    orphan = artifact(job).model_copy(update={"parent_id": "f" * 16})

    with pytest.raises(sqlite3.IntegrityError):
        await store.add_artifact(orphan)


async def test_ancestors_run_parent_first_and_children_oldest_first(store: CadStore) -> None:
    job = await new_job(store, variants=4)
    root = artifact(job, variant=0, height=10)
    child = artifact(job, variant=1, parent=root, height=15, minutes=1)
    grandchild = artifact(job, variant=2, parent=child, height=20, minutes=2)
    sibling = artifact(job, variant=3, parent=root, height=12, minutes=3)
    for made in (root, child, grandchild, sibling):
        await store.add_artifact(made)

    assert [a.id for a in await store.ancestors(grandchild.id)] == [child.id, root.id]
    assert await store.ancestors(root.id) == []
    assert [a.id for a in await store.children(root.id)] == [child.id, sibling.id]
    assert await store.children(grandchild.id) == []


async def test_lists_are_newest_first_limited_and_filtered_by_conversation(
    store: CadStore,
) -> None:
    job = await new_job(store, variants=4)
    made = [
        artifact(job, variant=index, conversation_id=conversation, minutes=index)
        for index, conversation in enumerate(("kitchen", "garage", "kitchen", None))
    ]
    for each in made:
        await store.add_artifact(each)

    assert [a.id for a in await store.list_artifacts()] == [a.id for a in reversed(made)]
    assert [a.id for a in await store.list_artifacts(limit=2)] == [made[3].id, made[2].id]
    kitchen = await store.list_artifacts(conversation_id="kitchen")
    assert [a.id for a in kitchen] == [made[2].id, made[0].id]
    assert await store.list_artifacts(conversation_id="attic") == []
