"""The part library provider in-process: real CadQuery, FakeOpenAI as the model."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime
import json
import math
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kittyai.cad.mesh import mesh_metrics
from kittyai.cad.options import DEFAULT_PRINTERS, MATERIAL_DENSITY
from kittyai.cad.providers.base import ProviderError, VariantTask
from kittyai.cad.providers.parametric import NoFamilyFits, ParametricProvider, plan
from kittyai.chat_model import ChatModel, ModelOptions
from kittyai.contract.cad import (
    Artifact,
    ArtifactFile,
    FileKind,
    GenerateRequest,
    Material,
    PartMetrics,
    ProviderName,
)
from tests.helpers.fake_llm import FakeOpenAI, ScriptedError, ScriptedReply
from tests.helpers.net import free_port

MK4 = DEFAULT_PRINTERS[0]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


def provider(session: aiohttp.ClientSession, url: str | None) -> ParametricProvider:
    return ParametricProvider(ChatModel(session, ModelOptions(url=url, timeout=10)))


def task(
    tmp_path: Path, *, variant: int = 0, parent: Artifact | None = None, **request: Any
) -> VariantTask:
    out_dir = tmp_path / f"variant-{variant}"
    out_dir.mkdir()
    parsed = GenerateRequest(**request)
    return VariantTask(
        request=parsed,
        variant=variant,
        variants=parsed.variants,
        parent=parent,
        printer=MK4,
        material=Material.PETG,
        density_g_cm3=MATERIAL_DENSITY[Material.PETG],
        out_dir=out_dir,
    )


def answer(family: str, **parameters: Any) -> ScriptedReply:
    return ScriptedReply(json.dumps({"family": family, "parameters": parameters}))


def scripted_parent(**fields: Any) -> Artifact:
    return Artifact(
        id="0123456789abcdef",
        job_id="fedcba9876543210",
        variant=0,
        provider=ProviderName.CADQUERY,
        script="import cadquery as cq\nresult = cq.Workplane().box(10, 10, 10)\n",
        printer="prusa_mk4",
        material=Material.PLA,
        metrics=PartMetrics(volume_mm3=1000, bbox_mm=(10, 10, 10), mass_g=1.24, solids=1),
        files=[ArtifactFile(kind=FileKind.STL, name="part.stl", size=684, sha256="0" * 64)],
        created_at=datetime(2026, 11, 30, tzinfo=UTC),
        **fields,
    )


async def test_a_family_with_parameters_builds_without_a_model(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    made = await provider(session, None).generate(
        task(tmp_path, family="plate", parameters={"rows": 1, "columns": 3, "hole_spacing": 15})
    )

    assert made.family == "plate"
    assert made.parameters["columns"] == 3
    assert set(made.files) == {FileKind.STEP, FileKind.STL, FileKind.THREE_MF}
    volume = 60 * 40 * 3 - 3 * math.pi * 2.25**2 * 3
    assert made.metrics.volume_mm3 == pytest.approx(volume, rel=0.001)
    assert made.metrics.mass_g == pytest.approx(volume / 1000 * 1.27, rel=0.001)
    stl = mesh_metrics(made.files[FileKind.STL], 1.27)
    assert stl.volume_mm3 == pytest.approx(volume, rel=0.005)
    assert made.repair_rounds == 0


async def test_without_a_model_a_named_family_uses_its_defaults_and_a_bare_prompt_fails(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    library = provider(session, None)

    made = await library.generate(task(tmp_path, prompt="a spacer", family="spacer"))
    with pytest.raises(ProviderError, match="no model is configured"):
        await library.generate(task(tmp_path, variant=1, prompt="a spacer"))

    assert made.parameters == {"outer_diameter": 10, "inner_diameter": 4.5, "height": 10}
    assert await library.unavailable_reason() == "no model is configured"


async def test_a_model_can_fill_in_the_family_the_request_names(
    session: aiohttp.ClientSession, fake: FakeOpenAI, tmp_path: Path
) -> None:
    fake.enqueue(answer("hook", reach=60, width=25))

    made = await provider(session, fake.url).generate(
        task(tmp_path, prompt="a hook for a bike helmet", family="hook")
    )

    assert made.family == "hook"
    assert (made.parameters["reach"], made.parameters["width"]) == (60, 25)
    schema = fake.requests[0].body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["family"]["enum"] == ["hook", "none"]
    system = fake.requests[0].body["messages"][0]["content"]
    assert "- hook:" in system
    assert "- spacer:" not in system


@pytest.mark.parametrize(
    ("first", "refusal"),
    [
        pytest.param(
            {"family": "box", "parameters": {"length": 400}},
            "the part would be 400 \N{MULTIPLICATION SIGN} 30 \N{MULTIPLICATION SIGN} 10 mm",
            id="too-large",
        ),
        pytest.param(
            {"family": "teapot", "parameters": {}}, 'family must be one of "box"', id="family"
        ),
        pytest.param({"family": "box", "parameters": [1, 2]}, "the answer must be", id="shape"),
    ],
)
async def test_answers_that_cannot_be_built_go_back_once_with_the_reason(
    session: aiohttp.ClientSession,
    fake: FakeOpenAI,
    tmp_path: Path,
    first: dict[str, Any],
    refusal: str,
) -> None:
    fake.enqueue(ScriptedReply(json.dumps(first)), answer("box", length=200))

    made = await provider(session, fake.url).generate(task(tmp_path, prompt="a long block"))

    assert (made.family, made.parameters["length"], made.repair_rounds) == ("box", 200, 1)
    assert refusal in fake.requests[1].body["messages"][-1]["content"]


async def test_a_second_bad_answer_fails_the_variant(
    session: aiohttp.ClientSession, fake: FakeOpenAI, tmp_path: Path
) -> None:
    fake.enqueue(answer("box", height=0), answer("box", height=-1))

    with pytest.raises(ProviderError, match="height: Input should be greater than 0"):
        await provider(session, fake.url).generate(task(tmp_path, prompt="a thin shim"))
    assert len(fake.requests) == 2


async def test_none_means_no_family_fits(
    session: aiohttp.ClientSession, fake: FakeOpenAI, tmp_path: Path
) -> None:
    fake.enqueue(answer("none"))

    with pytest.raises(NoFamilyFits):
        await provider(session, fake.url).generate(task(tmp_path, prompt="a chess knight"))


async def test_a_child_of_a_scripted_part_is_not_for_the_library(
    session: aiohttp.ClientSession, fake: FakeOpenAI, tmp_path: Path
) -> None:
    with pytest.raises(NoFamilyFits, match="not made from a part family"):
        await provider(session, fake.url).generate(
            task(
                tmp_path,
                prompt="make it taller",
                parent_id="0123456789abcdef",
                parent=scripted_parent(),
            )
        )
    assert fake.requests == []


async def test_a_model_that_fails_or_cannot_be_reached_fails_the_variant(
    session: aiohttp.ClientSession, fake: FakeOpenAI, tmp_path: Path
) -> None:
    fake.enqueue(ScriptedError(503))

    with pytest.raises(ProviderError, match="the model answered HTTP 503"):
        await provider(session, fake.url).generate(task(tmp_path, prompt="a knob"))
    with pytest.raises(ProviderError, match="the model could not be reached"):
        await provider(session, f"http://127.0.0.1:{free_port()}/v1").generate(
            task(tmp_path, variant=1, prompt="a knob")
        )


def test_the_plan_says_when_the_model_is_needed() -> None:
    parent = scripted_parent().model_copy(
        update={"family": "box", "parameters": {"length": 50}, "provider": "parametric"}
    )

    fixed = plan(GenerateRequest(parent_id=parent.id, parameters={"height": 4}), parent)
    reread = plan(GenerateRequest(parent_id=parent.id, prompt="make it wider"), parent)
    labelled = plan(GenerateRequest(family="box", prompt="a foot"), None)
    varied = plan(
        GenerateRequest(family="box", prompt="feet", parameters={"height": 4}, variants=2), None
    )

    assert fixed.family is not None
    assert (fixed.family.name, fixed.parameters, fixed.ask_model) == (
        "box",
        {"length": 50, "height": 4},
        False,
    )
    assert (reread.ask_model, reread.needs_model) == (True, True)
    assert (labelled.ask_model, labelled.needs_model) == (True, False)
    assert varied.ask_model
