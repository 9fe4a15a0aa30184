"""The cloud CAD providers against protocol-faithful fakes of Zoo and Tripo."""

import asyncio
from pathlib import Path

import aiohttp
import cadquery as cq
import pytest

from kittyai.cad.geometry import TIMES
from kittyai.cad.mesh import stl_watertight
from kittyai.cad.options import DEFAULT_PRINTERS, MATERIAL_DENSITY, CloudOptions
from kittyai.cad.providers.base import ProviderError, VariantTask
from kittyai.cad.providers.tripo import TripoProvider
from kittyai.cad.providers.zoo import ZooProvider
from kittyai.contract.cad import FileKind, GenerateRequest, Material, ProviderName
from tests.helpers.fake_cad_clouds import (
    FakeTripo,
    FakeZoo,
    bracket,
    step_bytes,
    stl_bytes,
    without_last_triangle,
)
from tests.helpers.net import free_port

ZOO_KEY = "zoo-key-0123456789abcdef"
TRIPO_KEY = "tsk_0123456789abcdef"
PROMPT = "an L bracket 60 mm long, 30 mm wide and 40 mm tall with 5 mm screw holes"
POLL = 0.01
PRINTER = DEFAULT_PRINTERS[0]


@pytest.fixture(scope="module")
def bracket_volume() -> float:
    """The B-rep volume of the fakes' default part."""
    return float(bracket().val().Volume())


def variant(out_dir: Path, provider: ProviderName, prompt: str | None = PROMPT) -> VariantTask:
    request = (
        GenerateRequest(prompt=prompt, provider=provider)
        if prompt is not None
        else GenerateRequest(family="spacer", provider=provider)
    )
    return VariantTask(
        request=request,
        variant=0,
        variants=1,
        parent=None,
        printer=PRINTER,
        material=Material.PLA,
        density_g_cm3=MATERIAL_DENSITY[Material.PLA],
        out_dir=out_dir,
    )


def zoo(
    session: aiohttp.ClientSession, url: str, key: str | None = ZOO_KEY, **kw: float
) -> ZooProvider:
    cloud = CloudOptions(zoo_api_key=key, zoo_url=url, **kw)
    return ZooProvider(session, cloud, poll_interval=POLL)


def tripo(
    session: aiohttp.ClientSession, url: str, key: str | None = TRIPO_KEY, **kw: float
) -> TripoProvider:
    cloud = CloudOptions(tripo_api_key=key, tripo_url=url, **kw)
    return TripoProvider(session, cloud, poll_interval=POLL)


def files_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


async def generate_error(provider: ZooProvider | TripoProvider, task: VariantTask) -> str:
    with pytest.raises(ProviderError) as caught:
        await provider.generate(task)
    message = str(caught.value)
    assert ZOO_KEY not in message
    assert TRIPO_KEY not in message
    return message


# --------------------------------------------------------------------------- Zoo


async def test_zoo_part_is_checked_exported_and_measured(
    session: aiohttp.ClientSession, tmp_path: Path, bracket_volume: float
) -> None:
    async with FakeZoo(api_key=ZOO_KEY, polls_to_finish=3) as fake:
        provider = zoo(session, fake.url)
        assert await provider.unavailable_reason() is None
        result = await provider.generate(variant(tmp_path, ProviderName.ZOO))

    assert set(result.files) == {FileKind.STEP, FileKind.STL, FileKind.THREE_MF}
    assert files_in(tmp_path) == ["part.3mf", "part.step", "part.stl"]
    assert result.metrics.volume_mm3 == pytest.approx(bracket_volume, rel=1e-4)
    assert result.metrics.bbox_mm == pytest.approx((60, 30, 40), abs=0.01)
    assert result.metrics.mass_g == pytest.approx(bracket_volume / 1000 * 1.24, rel=1e-4)
    assert result.metrics.solids == 1
    assert stl_watertight(result.files[FileKind.STL])
    reimported = cq.importers.importStep(str(result.files[FileKind.STEP]))
    assert reimported.val().Volume() == pytest.approx(bracket_volume, rel=1e-4)
    # Zoo saw the key once per call, the prompt once, and three looks at the request.
    assert fake.paths()[:2] == ["/user", "/ai/text-to-cad/step"]
    assert len([p for p in fake.paths() if p.startswith("/user/text-to-cad/")]) == 3
    assert fake.requests[1].body == {"prompt": PROMPT}
    assert {r.headers["Authorization"] for r in fake.requests} == {f"Bearer {ZOO_KEY}"}


async def test_zoo_without_a_key_is_unavailable_and_never_called(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with FakeZoo(api_key=ZOO_KEY) as fake:
        provider = zoo(session, fake.url, key=None)
        assert await provider.unavailable_reason() == "no Zoo API key is configured"
        assert await generate_error(provider, variant(tmp_path, ProviderName.ZOO)) == (
            "no Zoo API key is configured"
        )
    assert fake.requests == []


async def test_zoo_rejecting_the_key_is_reported_once_without_the_key(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeZoo(api_key="the-right-key-000000") as fake:
        provider = zoo(session, fake.url)
        first = await provider.unavailable_reason()
        second = await provider.unavailable_reason()
    assert first == second == "Zoo rejected the API key"
    assert ZOO_KEY not in first
    assert fake.paths() == ["/user"]


async def test_zoo_outage_is_not_remembered(session: aiohttp.ClientSession) -> None:
    async with FakeZoo(api_key=ZOO_KEY) as fake:
        provider = zoo(session, fake.url)
        fake.outage = 503
        assert await provider.unavailable_reason() == "Zoo answered HTTP 503 to the key check"
        fake.outage = None
        assert await provider.unavailable_reason() is None
        assert await provider.unavailable_reason() is None
    assert fake.paths() == ["/user", "/user"]


async def test_zoo_out_of_reach_is_unavailable(session: aiohttp.ClientSession) -> None:
    provider = zoo(session, f"http://127.0.0.1:{free_port()}")
    assert await provider.unavailable_reason() == "Zoo cannot be reached"


async def test_zoo_without_the_rest_route_fails_clearly(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with FakeZoo(api_key=ZOO_KEY, rest_create_removed=True) as fake:
        message = await generate_error(zoo(session, fake.url), variant(tmp_path, ProviderName.ZOO))
    assert message.startswith("Zoo no longer accepts text-to-CAD requests over REST (HTTP 404)")
    assert "parametric or cadquery provider" in message


async def test_zoo_failing_the_request_gives_zoo_s_reason(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    reason = "The prompt must describe a single mechanical part."
    async with FakeZoo(api_key=ZOO_KEY, failure=reason) as fake:
        message = await generate_error(zoo(session, fake.url), variant(tmp_path, ProviderName.ZOO))
    assert message == f"Zoo could not make the part: {reason}"
    assert files_in(tmp_path) == []


async def test_zoo_echoing_the_key_never_shows_it(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with FakeZoo(api_key=ZOO_KEY, failure=f"token {ZOO_KEY} is over its quota") as fake:
        message = await generate_error(zoo(session, fake.url), variant(tmp_path, ProviderName.ZOO))
    assert message == "Zoo could not make the part: token *** is over its quota"


async def test_zoo_part_larger_than_the_printer_is_refused(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    long_bracket = await asyncio.to_thread(lambda: step_bytes(bracket(length_mm=400)))
    async with FakeZoo(api_key=ZOO_KEY, step=long_bracket) as fake:
        message = await generate_error(zoo(session, fake.url), variant(tmp_path, ProviderName.ZOO))
    assert message.startswith("Zoo's part cannot be printed: the part is 400.0")
    assert f"{TIMES.join(['250', '210', '220'])} mm" in message
    assert files_in(tmp_path) == []


async def test_zoo_taking_too_long_fails_the_variant(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with FakeZoo(api_key=ZOO_KEY, polls_to_finish=1_000_000) as fake:
        provider = zoo(session, fake.url, timeout=0.3)
        message = await generate_error(provider, variant(tmp_path, ProviderName.ZOO))
    assert message == "Zoo did not finish the part within 0.3 s"
    assert len([p for p in fake.paths() if p.startswith("/user/text-to-cad/")]) >= 3


async def test_zoo_needs_a_prompt(session: aiohttp.ClientSession, tmp_path: Path) -> None:
    async with FakeZoo(api_key=ZOO_KEY) as fake:
        task = variant(tmp_path, ProviderName.ZOO, prompt=None)
        message = await generate_error(zoo(session, fake.url), task)
    assert "no prompt" in message
    assert fake.requests == []


# --------------------------------------------------------------------------- Tripo


async def test_tripo_mesh_is_converted_downloaded_and_measured(
    session: aiohttp.ClientSession, tmp_path: Path, bracket_volume: float
) -> None:
    async with FakeTripo(api_key=TRIPO_KEY, polls_to_finish=3) as fake:
        provider = tripo(session, fake.url)
        assert await provider.unavailable_reason() is None
        result = await provider.generate(variant(tmp_path, ProviderName.TRIPO))
        assert result.files[FileKind.STL].read_bytes() == fake.stl

    assert result.files == {FileKind.STL: tmp_path / "part.stl"}
    assert files_in(tmp_path) == ["part.stl"]
    assert stl_watertight(result.files[FileKind.STL])
    # The mesh's volume is the bracket's within its tessellation.
    assert result.metrics.volume_mm3 == pytest.approx(bracket_volume, rel=5e-3)
    assert result.metrics.bbox_mm == pytest.approx((60, 30, 40), abs=0.01)
    assert result.metrics.mass_g == pytest.approx(result.metrics.volume_mm3 / 1000 * 1.24)
    paths = fake.paths()
    assert paths[:2] == ["/v3/account/balance", "/v3/generation/text-to-model"]
    generation = next(r for r in fake.requests if r.path == "/v3/generation/text-to-model")
    assert generation.body == {"prompt": PROMPT, "texture": False, "pbr": False}
    convert = next(r for r in fake.requests if r.path == "/v3/models/convert")
    assert convert.body["format"] == "STL"
    assert convert.body["input"] == paths[2].removeprefix("/v3/tasks/")
    # Each task was looked at until it settled: three polls for each of the two.
    assert len([p for p in paths if p.startswith("/v3/tasks/")]) == 6
    download = fake.requests[-1]
    assert download.path.endswith("/model.stl")
    # The signed URL is fetched without the key: it never leaves Tripo's API.
    assert "Authorization" not in download.headers


async def test_tripo_key_problems_make_it_unavailable(session: aiohttp.ClientSession) -> None:
    async with FakeTripo(api_key=TRIPO_KEY) as fake:
        assert await tripo(session, fake.url, key=None).unavailable_reason() == (
            "no Tripo API key is configured"
        )
        assert await tripo(session, fake.url, key="sk-0123456789").unavailable_reason() == (
            "the Tripo API key must start with tsk_"
        )
        assert fake.requests == []
        wrong = tripo(session, fake.url, key="tsk_wrong_key_0000")
        assert await wrong.unavailable_reason() == "Tripo rejected the API key"
        assert await wrong.unavailable_reason() == "Tripo rejected the API key"
    assert fake.paths() == ["/v3/account/balance"]


async def test_tripo_outage_is_not_remembered(session: aiohttp.ClientSession) -> None:
    async with FakeTripo(api_key=TRIPO_KEY) as fake:
        provider = tripo(session, fake.url)
        fake.outage = 502
        assert await provider.unavailable_reason() == "Tripo answered HTTP 502 to the key check"
        fake.outage = None
        assert await provider.unavailable_reason() is None
        assert await provider.unavailable_reason() is None
    assert fake.paths() == ["/v3/account/balance", "/v3/account/balance"]


async def test_tripo_out_of_reach_is_unavailable(session: aiohttp.ClientSession) -> None:
    provider = tripo(session, f"http://127.0.0.1:{free_port()}")
    assert await provider.unavailable_reason() == "Tripo cannot be reached"


@pytest.mark.parametrize("status", ["failed", "banned"])
async def test_tripo_giving_up_gives_tripo_s_reason(
    session: aiohttp.ClientSession, tmp_path: Path, status: str
) -> None:
    reason = "The prompt was flagged by the content filter."
    async with FakeTripo(api_key=TRIPO_KEY, failure=reason, failure_status=status) as fake:
        task = variant(tmp_path, ProviderName.TRIPO)
        message = await generate_error(tripo(session, fake.url), task)
    assert message == f"Tripo could not make the part ({status}): {reason}"
    assert "/v3/models/convert" not in fake.paths()


async def test_tripo_open_mesh_is_refused(session: aiohttp.ClientSession, tmp_path: Path) -> None:
    open_mesh = await asyncio.to_thread(lambda: without_last_triangle(stl_bytes(bracket())))
    async with FakeTripo(api_key=TRIPO_KEY, stl=open_mesh) as fake:
        task = variant(tmp_path, ProviderName.TRIPO)
        message = await generate_error(tripo(session, fake.url), task)
    assert message == "Tripo's mesh is not watertight, so it cannot be sliced reliably"
    assert files_in(tmp_path) == []


async def test_tripo_part_larger_than_the_printer_is_refused(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    tall = await asyncio.to_thread(lambda: stl_bytes(bracket(height_mm=300)))
    async with FakeTripo(api_key=TRIPO_KEY, stl=tall) as fake:
        task = variant(tmp_path, ProviderName.TRIPO)
        message = await generate_error(tripo(session, fake.url), task)
    assert message == (
        f"Tripo's part is {TIMES.join(['60', '30', '300'])} mm, larger than the build volume"
        f" of prusa_mk4 ({TIMES.join(['250', '210', '220'])} mm)"
    )
    assert files_in(tmp_path) == []


async def test_tripo_taking_too_long_fails_the_variant(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with FakeTripo(api_key=TRIPO_KEY, polls_to_finish=1_000_000) as fake:
        provider = tripo(session, fake.url, timeout=0.3)
        message = await generate_error(provider, variant(tmp_path, ProviderName.TRIPO))
    assert message == "Tripo did not finish the part within 0.3 s"
    assert len([p for p in fake.paths() if p.startswith("/v3/tasks/")]) >= 3
