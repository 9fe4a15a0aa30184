"""CAD jobs in a real service process: a model choosing families, MQTT events, crashes.

The model is FakeOpenAI, a real HTTP server speaking OpenAI's chat completions; the
broker is a real Mosquitto. Both and one CAD process are shared by the module, so the
tests run on one event loop of the module's.
"""

import asyncio
from collections.abc import AsyncIterator, Iterator
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from kittyai.cad.store import CadStore
from kittyai.catalog import ServiceName
from kittyai.contract import CAD_JOB
from kittyai.contract.cad import (
    CadJob,
    CadJobEvent,
    GenerateRequest,
    JobState,
    ProviderName,
    VariantResult,
)
from tests.helpers.broker import MosquittoBroker, module_broker
from tests.helpers.fake_llm import FakeOpenAI, ScriptedReply
from tests.helpers.loopback_server import serving_for_module
from tests.helpers.net import loopback_sockets
from tests.helpers.services import ServiceProcess
from tests.lib.cad.conftest import CadApi, start_cad_service
from tests.lib.mqtt_probe import MqttProbe, text
from tests.lib.test_contract import validator
from tests.lib.waiting import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="module")

LOST_ID = "00c0ffee00c0ffee"
M3_SPACER = {"outer_diameter": 7.0, "inner_diameter": 3.4, "height": 20.0}
ALL_FAMILIES = {
    "box",
    "enclosure",
    "l_bracket",
    "pipe_bracket",
    "spacer",
    "cable_clip",
    "knob",
    "hook",
    "plate",
}


def family_answer(family: str, delay: float = 0.0, **parameters: Any) -> ScriptedReply:
    return ScriptedReply(json.dumps({"family": family, "parameters": parameters}), delay=delay)


def spacer_volume(outer_diameter: float, inner_diameter: float, height: float) -> float:
    return math.pi * ((outer_diameter / 2) ** 2 - (inner_diameter / 2) ** 2) * height


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    yield from module_broker(tmp_path_factory)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def model() -> AsyncIterator[FakeOpenAI]:
    async with serving_for_module(FakeOpenAI(api_key="sk-router-0123")) as fake:
        yield fake


def cad_options(model: FakeOpenAI) -> dict[str, Any]:
    return {"model": {"url": model.url, "api_key": "sk-router-0123", "timeout": 30}}


@pytest.fixture(scope="module")
def cad(
    tmp_path_factory: pytest.TempPathFactory, broker: MosquittoBroker, model: FakeOpenAI
) -> Iterator[ServiceProcess]:
    process = start_cad_service(
        tmp_path_factory.mktemp("cad"), mqtt_port=broker.port, **cad_options(model)
    )
    yield process
    process.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def client(cad: ServiceProcess, session: aiohttp.ClientSession, model: FakeOpenAI) -> CadApi:
    model.requests.clear()
    return CadApi(cad, session)


async def test_the_model_picks_a_family_and_its_parameters_for_a_prompt(
    client: CadApi, model: FakeOpenAI
) -> None:
    model.enqueue(family_answer("spacer", **M3_SPACER))

    job, [artifact] = await client.make(prompt="a 20 mm spacer for M3", slice=False)

    assert job.variants[0].provider is ProviderName.PARAMETRIC
    assert (artifact.family, artifact.parameters) == ("spacer", M3_SPACER)
    assert artifact.prompt == "a 20 mm spacer for M3"
    assert artifact.metrics.volume_mm3 == pytest.approx(spacer_volume(**M3_SPACER), rel=0.001)
    [asked] = model.requests
    assert asked.headers["Authorization"] == "Bearer sk-router-0123"
    body = asked.body
    assert body["model"] == "kitty-auto"
    schema = body["response_format"]["json_schema"]["schema"]
    assert set(schema["properties"]["family"]["enum"]) == ALL_FAMILIES | {"none"}
    system, user = body["messages"]
    assert "millimetres" in system["content"]
    assert "inner_diameter (number): Diameter of the hole through it" in system["content"]
    assert '"none"' in system["content"]
    assert user == {"role": "user", "content": "a 20 mm spacer for M3"}


async def test_an_invalid_answer_is_repaired_in_one_more_round(
    client: CadApi, model: FakeOpenAI
) -> None:
    model.enqueue(
        family_answer("spacer", outer_diameter=7, inner_diameter=8, height=20),
        family_answer("spacer", **M3_SPACER),
    )

    job, [artifact] = await client.make(prompt="an M3 spacer, 20 mm", slice=False)

    assert job.variants[0].repair_rounds == 1
    assert artifact.parameters == M3_SPACER
    repair = model.requests[1].body["messages"]
    assert [message["role"] for message in repair] == ["system", "user", "assistant", "user"]
    assert (
        "inner_diameter (8 mm) must be smaller than outer_diameter (7 mm)"
        in (repair[-1]["content"])
    )


async def test_a_prompt_no_family_fits_goes_to_a_cadquery_script(
    client: CadApi, model: FakeOpenAI
) -> None:
    model.enqueue(
        family_answer("none"),
        ScriptedReply(
            "```python\nimport cadquery as cq\n\n"
            "result = cq.Workplane('XY').box(30, 20, 5).faces('>Z').workplane().hole(6)\n```"
        ),
    )

    job, [artifact] = await client.make(prompt="a tray for tea light candles", slice=False)

    assert job.variants[0].provider is ProviderName.CADQUERY
    assert artifact.provider is ProviderName.CADQUERY
    assert artifact.family is None
    assert artifact.script is not None
    assert "box(30, 20, 5)" in artifact.script
    assert artifact.metrics.volume_mm3 == pytest.approx(3000 - math.pi * 9 * 5, rel=0.001)
    _, script = await client.file(artifact.id, "part.py")
    assert script.decode() == artifact.script
    family_choice, scripting = model.requests
    assert "response_format" in family_choice.body
    assert "CadQuery" in scripting.body["messages"][0]["content"]
    assert scripting.body["messages"][-1]["content"] == "a tray for tea light candles"


async def test_variants_are_different_readings_of_the_prompt(
    client: CadApi, model: FakeOpenAI
) -> None:
    model.enqueue(
        family_answer("knob", diameter=30, height=15, grip_ridges=12),
        family_answer("knob", diameter=40, height=12, grip_ridges=0),
    )

    job, artifacts = await client.make(prompt="a knob for my amplifier", variants=2, slice=False)

    assert [variant.state for variant in job.variants] == [JobState.DONE, JobState.DONE]
    assert [a.variant for a in artifacts] == [0, 1]
    assert [a.parameters["diameter"] for a in artifacts] == [30, 40]
    first, second = (request.body for request in model.requests)
    assert first["temperature"] < second["temperature"]
    assert "variant" not in first["messages"][-1]["content"]
    assert "variant 2 of 2" in second["messages"][-1]["content"]


async def test_a_prompt_changes_the_parents_parameters(client: CadApi, model: FakeOpenAI) -> None:
    _, [parent] = await client.make(family="spacer", parameters=M3_SPACER, slice=False)
    model.enqueue(family_answer("spacer", height=25))

    _, [child] = await client.make(parent_id=parent.id, prompt="make it 5 mm taller", slice=False)

    assert child.parent_id == parent.id
    assert child.parameters == {**M3_SPACER, "height": 25}
    assert child.metrics.bbox_mm[2] == pytest.approx(25)
    [asked] = model.requests
    schema = asked.body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["family"]["enum"] == ["spacer", "none"]
    question = asked.body["messages"][-1]["content"]
    assert json.dumps(M3_SPACER, sort_keys=True) in question
    assert "make it 5 mm taller" in question


async def test_job_events_arrive_in_order_on_mqtt(
    client: CadApi, model: FakeOpenAI, broker: MosquittoBroker
) -> None:
    bad = family_answer("spacer", outer_diameter=-7, inner_diameter=3, height=20)
    model.enqueue(bad, bad)

    async with MqttProbe(broker.port, CAD_JOB.topic(ServiceName.CAD)) as probe:
        done, [artifact] = await client.make(family="box", conversation_id="kitchen", slice=True)
        failed, _ = await client.make(prompt="a spacer", slice=False)
        await wait_until(
            lambda: (
                {event.job_id for event in events(probe) if event.state is JobState.FAILED}
                == {failed.id}
            )
        )

    for message in probe.messages:
        assert (message.qos, message.retain) == (1, False)
        validator(CAD_JOB).validate(json.loads(text(message)))
    ok = [event for event in events(probe) if event.job_id == done.id]
    assert ok[0].state is JobState.QUEUED
    assert {event.state for event in ok[1:-1]} == {JobState.RUNNING}
    assert len(ok) >= 5  # queued, making, rendering, slicing, storing, done
    assert ok[-1].state is JobState.DONE
    assert ok[-1].artifact_ids == [artifact.id]
    assert ok[-1].conversation_id == "kitchen"
    progress = [event.progress for event in ok]
    assert progress == sorted(progress)
    assert (progress[0], progress[-1]) == (0, 1)
    assert any("slicing" in (event.message or "") for event in ok)
    bad_events = [event for event in events(probe) if event.job_id == failed.id]
    assert bad_events[-1].state is JobState.FAILED
    assert bad_events[-1].artifact_ids == []
    assert "outer_diameter: Input should be greater than 0" in (bad_events[-1].message or "")
    assert failed.state is JobState.FAILED
    assert failed.error == bad_events[-1].message


def events(probe: MqttProbe) -> list[CadJobEvent]:
    return [CadJobEvent.model_validate_json(text(message)) for message in probe.messages]


async def test_a_job_killed_midway_resumes_without_redoing_its_finished_variants(
    tmp_path: Path, model: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    def answer(body: dict[str, Any]) -> ScriptedReply:
        question = body["messages"][-1]["content"]
        variant = int(question.split("This is variant ")[1][0]) if "variant" in question else 1
        # Slow enough that the kill lands while a later variant is being made.
        return family_answer("spacer", delay=1.5, outer_diameter=12, height=10 * variant)

    model.respond_with(answer)
    process = start_cad_service(tmp_path, **cad_options(model))
    client = CadApi(process, session)
    try:
        job = await client.submit(
            prompt="three spacers", variants=3, conversation_id="crash", slice=False
        )
        before = await first_variant_done(client, job.id)
        [kept] = [v.artifact_id for v in before.variants if v.artifact_id is not None]
        kept_artifact = await client.artifact(kept)
        kept_files = {
            entry.name: hashlib.sha256((await client.file(kept, entry.name))[1]).hexdigest()
            for entry in kept_artifact.files
        }

        process.kill()
        with loopback_sockets():
            process.start(timeout=60)

        after = await client.finished(job.id)
        assert after.state is JobState.DONE
        assert [v.state for v in after.variants] == [JobState.DONE] * 3
        assert after.variants[0].artifact_id == kept
        listed = (await client.get("/api/cad/artifacts?conversation_id=crash"))["artifacts"]
        assert sorted(item["variant"] for item in listed) == [0, 1, 2]
        assert await client.artifact(kept) == kept_artifact
        for name, digest in kept_files.items():
            assert hashlib.sha256((await client.file(kept, name))[1]).hexdigest() == digest
        heights = sorted(item["parameters"]["height"] for item in listed)
        assert heights == [10, 20, 30]
        # One folder per artifact, and nothing half-made left over.
        artifacts_dir = process.data_dir / "artifacts"
        folders = {path.name for path in artifacts_dir.iterdir()} - {".work"}
        assert folders == {item["id"] for item in listed}
        assert not any(path.is_file() for path in (artifacts_dir / ".work").rglob("*"))
        assert "Resuming 1 unfinished CAD jobs" in process.log()
    finally:
        model.respond_with(None)
        process.kill()


async def first_variant_done(client: CadApi, job_id: str) -> CadJob:
    """Return the job as soon as its first variant is done, before the last one is."""
    while True:
        job = await client.job(job_id)
        assert job.state is not JobState.DONE, "the job finished before the kill"
        if job.variants[0].state is JobState.DONE:
            return job
        await asyncio.sleep(0.05)


async def test_a_folder_left_between_rename_and_insert_is_removed_on_restart(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    # What a crash right after moving a variant's folder into place leaves behind.
    data_dir = tmp_path / "cad-data"
    store = await CadStore.open(data_dir / "cad.sqlite3")
    job = await store.create_job(GenerateRequest(family="box", slice=False))
    job.state = JobState.RUNNING
    job.variants[0] = VariantResult(
        variant=0, state=JobState.RUNNING, provider=ProviderName.PARAMETRIC, artifact_id=LOST_ID
    )
    await store.update_job(job)
    await store.close()
    lost = data_dir / "artifacts" / LOST_ID
    lost.mkdir(parents=True)
    (lost / "part.stl").write_bytes(b"half a part")
    stranger = data_dir / "artifacts" / "notes"
    stranger.mkdir()

    process = start_cad_service(tmp_path)
    try:
        client = CadApi(process, session)
        done = await client.finished(job.id)

        assert done.state is JobState.DONE
        made = done.variants[0].artifact_id
        assert made is not None
        assert made != LOST_ID
        assert (await client.artifact(made)).metrics.bbox_mm == pytest.approx((40, 30, 10))
        assert not lost.exists()
        # Only what the store names is removed.
        assert stranger.is_dir()
        missing = await client.call("GET", f"/api/cad/artifacts/{LOST_ID}")
        assert missing.status == 404
    finally:
        process.kill()
