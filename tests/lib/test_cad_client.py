"""CadClient against the real CAD service process, and against servers that misbehave.

One CAD service (real CadQuery, real PrusaSlicer, its own SQLite store) serves the
module; each test makes the parts it asserts on.
"""

from collections.abc import AsyncIterator, Iterator
import math

import aiohttp
from aiohttp import web
import pytest

from kittyai.cad_client import CadClient, CadJobTimeoutError, CadRequestError
from kittyai.catalog import ServiceName
from kittyai.client import KittyAuthError, KittyConnectionError, KittyResponseError
from kittyai.contract.cad import FileKind, GenerateRequest, JobState, Material, ProviderName
from tests.helpers.loopback_server import RouteServer
from tests.helpers.net import free_port, loopback_sockets
from tests.helpers.services import ServiceProcess

TOKEN = "cad-client-token-0123456789"
BOX = {"length": 40, "width": 30, "height": 10, "hole_diameter": 8}
# 40 x 30 x 10 mm less an 8 mm hole through its 10 mm height.
BOX_VOLUME_MM3 = 40 * 30 * 10 - math.pi * 4**2 * 10
WAIT_S = 120.0


@pytest.fixture(scope="module")
def cad(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The real CAD service, without MQTT or a model: parts come from families."""
    with loopback_sockets():
        process = ServiceProcess(
            ServiceName.CAD, tmp_path_factory.mktemp("cad"), mqtt_port=None, token=TOKEN
        )
        process.start(timeout=60)
    yield process
    process.stop()


@pytest.fixture
def client(cad: ServiceProcess, session: aiohttp.ClientSession) -> CadClient:
    return CadClient(session, cad.url, TOKEN)


async def make_box(client: CadClient, **changes: object) -> str:
    """Make the box (with `changes` to the request); return its artifact id."""
    request = GenerateRequest.model_validate(
        {"family": "box", "parameters": BOX, "material": "petg", **changes}
    )
    job = await client.wait((await client.generate(request)).id, WAIT_S)
    assert job.state is JobState.DONE, job.error
    [variant] = job.variants
    assert variant.artifact_id is not None
    return variant.artifact_id


async def test_generate_wait_and_fetch(client: CadClient) -> None:
    """A box becomes a job, then an artifact with its numbers, files, preview and G-code."""
    request = GenerateRequest(
        family="box", parameters=BOX, material=Material.PETG, conversation_id="bench-1"
    )
    queued = await client.generate(request)
    assert queued.state in (JobState.QUEUED, JobState.RUNNING)
    assert queued.request == request

    job = await client.wait(queued.id, WAIT_S)
    assert job.state is JobState.DONE
    assert job.progress == 1
    [variant] = job.variants
    assert variant.provider is ProviderName.PARAMETRIC
    assert variant.artifact_id is not None

    artifact = await client.artifact(variant.artifact_id)
    assert artifact.job_id == job.id
    assert artifact.family == "box"
    assert artifact.conversation_id == "bench-1"
    assert artifact.metrics.volume_mm3 == pytest.approx(BOX_VOLUME_MM3, rel=1e-3)
    assert artifact.metrics.bbox_mm == pytest.approx((40, 30, 10), abs=1e-3)
    # PETG weighs 1.27 g/cm³.
    assert artifact.metrics.mass_g == pytest.approx(BOX_VOLUME_MM3 / 1000 * 1.27, rel=1e-3)
    assert artifact.slice is not None
    assert artifact.slice.material is Material.PETG
    assert artifact.slice.print_time_s > 0
    assert artifact.slice.filament_g > 0
    kinds = {file.kind for file in artifact.files}
    assert {FileKind.STEP, FileKind.STL, FileKind.THREE_MF, FileKind.PREVIEW} <= kinds
    assert FileKind.GCODE in kinds

    preview = await client.file(artifact.id, "preview.png")
    assert preview.startswith(b"\x89PNG\r\n\x1a\n")
    step = await client.file(artifact.id, "part.step")
    assert step.startswith(b"ISO-10303-21")
    gcode = (await client.file(artifact.id, "part.gcode")).decode()
    assert "; estimated printing time" in gcode

    [newest] = await client.artifacts(limit=1)
    assert newest == artifact
    assert [a.id for a in await client.artifacts(conversation_id="bench-1")] == [artifact.id]
    assert await client.artifacts(conversation_id="nobody-asked") == []


async def test_child_keeps_its_parent(client: CadClient) -> None:
    """A child with a new height is another artifact; the parent stays as it was."""
    parent_id = await make_box(client)
    parent = await client.artifact(parent_id)

    child_id = await make_box(client, parameters={"height": 20}, parent_id=parent_id, family=None)

    assert child_id != parent_id
    child = await client.lineage(child_id)
    assert child.artifact.parent_id == parent_id
    assert child.artifact.parameters["height"] == 20
    assert child.artifact.parameters["length"] == 40
    assert child.artifact.metrics.bbox_mm[2] == pytest.approx(20, abs=1e-3)
    assert [ancestor.id for ancestor in child.ancestors] == [parent_id]
    assert await client.artifact(parent_id) == parent
    assert [c.id for c in (await client.lineage(parent_id)).children] == [child_id]


async def test_library_and_printers(client: CadClient) -> None:
    """The families come with their parameter schemas; one printer is the default."""
    families = {family.name: family for family in await client.families()}
    assert "box" in families
    assert {"length", "width", "height", "hole_diameter"} <= set(
        families["box"].parameters_schema["properties"]
    )
    printers = await client.printers()
    assert [printer.name for printer in printers if printer.default] == ["prusa_mk4"]
    mk4 = next(printer for printer in printers if printer.name == "prusa_mk4")
    assert mk4.build_volume_mm == (250, 210, 220)


@pytest.mark.parametrize(
    ("request_body", "status", "code", "named"),
    [
        ({"family": "box", "parameters": {"length": -4}}, 422, "invalid_parameters", "length"),
        ({"family": "box", "parameters": {"length": 400}}, 422, "exceeds_build_volume", "400"),
        ({"family": "teapot"}, 422, "unknown_family", "teapot"),
        ({"family": "box", "printer": "ender_9"}, 422, "unknown_printer", "ender_9"),
        ({"family": "box", "parent_id": "no-such-part"}, 422, "unknown_parent", "no-such-part"),
    ],
)
async def test_refused_requests(
    client: CadClient, request_body: dict[str, object], status: int, code: str, named: str
) -> None:
    """The service's refusals come with their code, status and a message naming the problem."""
    with pytest.raises(CadRequestError) as refused:
        await client.generate(GenerateRequest.model_validate(request_body))
    assert (refused.value.status, refused.value.code) == (status, code)
    assert named in refused.value.message


async def test_unknown_ids(client: CadClient) -> None:
    """Unknown jobs, artifacts and files are 404s with their own codes."""
    artifact_id = await make_box(client)
    cases = [
        (client.job("no-such-job"), "job_not_found"),
        (client.artifact("no-such-part"), "artifact_not_found"),
        (client.lineage("no-such-part"), "artifact_not_found"),
        (client.file(artifact_id, "part.obj"), "file_not_found"),
        # An id cannot climb out of its route.
        (client.file(artifact_id, "../../../api/info"), "file_not_found"),
    ]
    for call, code in cases:
        with pytest.raises(CadRequestError) as refused:
            await call
        assert (refused.value.status, refused.value.code) == (404, code)


async def test_wait_gives_up_but_the_job_goes_on(client: CadClient) -> None:
    """A job still waiting after the timeout raises with the job; it finishes anyway."""
    request = GenerateRequest(family="box", parameters=BOX)
    # Jobs run one after the other: the second waits while the first is made.
    first = await client.generate(request)
    second = await client.generate(request)
    with pytest.raises(CadJobTimeoutError) as timed_out:
        await client.wait(second.id, 0)
    assert timed_out.value.job.id == second.id
    assert timed_out.value.job.state in (JobState.QUEUED, JobState.RUNNING)
    for queued in (first, second):
        assert (await client.wait(queued.id, WAIT_S)).state is JobState.DONE


async def test_wrong_token_and_no_service(
    cad: ServiceProcess, session: aiohttp.ClientSession
) -> None:
    """A wrong token is an auth error; nothing listening is a connection error."""
    with pytest.raises(KittyAuthError) as rejected:
        await CadClient(session, cad.url, "wrong-token").families()
    assert "wrong-token" not in str(rejected.value)
    closed = CadClient(session, f"http://127.0.0.1:{free_port()}", TOKEN)
    with pytest.raises(KittyConnectionError):
        await closed.printers()
    with pytest.raises(KittyConnectionError):
        await closed.file("a1b2", "preview.png")


@pytest.fixture
async def not_cad_url() -> AsyncIterator[str]:
    """Serve the CAD routes on 127.0.0.1 with bodies that are not the CAD service's."""

    async def artifacts(_: web.Request) -> web.Response:
        return web.json_response({"artifacts": [{"id": "x"}]})

    async def refused(_: web.Request) -> web.Response:
        return web.Response(status=422, text="<html>no</html>", content_type="text/html")

    async with RouteServer(
        {"/api/cad/artifacts": artifacts, "/api/cad/families": refused}
    ) as server:
        yield server.url


async def test_answers_that_break_the_api(not_cad_url: str, session: aiohttp.ClientSession) -> None:
    """A body that is not the API's, or a refusal without its error body, is a response error."""
    client = CadClient(session, not_cad_url, TOKEN)
    with pytest.raises(KittyResponseError, match="an artifact list that is not valid"):
        await client.artifacts()
    with pytest.raises(KittyResponseError, match="answered HTTP 422"):
        await client.families()
