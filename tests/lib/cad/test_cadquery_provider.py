"""The CadQuery provider against a real OpenAI-speaking fake model and the real sandbox."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime
import math
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kittyai.cad.geometry import TIMES
from kittyai.cad.options import DEFAULT_PRINTERS, SandboxOptions
from kittyai.cad.providers.base import ProviderError, VariantTask
from kittyai.cad.providers.cadquery import CadQueryProvider
from kittyai.chat_model import ChatModel, ModelOptions
from kittyai.contract.cad import (
    Artifact,
    FileKind,
    GenerateRequest,
    Material,
    PartMetrics,
    ProviderName,
)
from tests.helpers.fake_llm import FakeOpenAI, ScriptedError, ScriptedReply

PRUSA_MK4 = DEFAULT_PRINTERS[0]
PLA = 1.24
PROMPT = "a 40 by 30 mm plate, 10 mm thick, with an 8 mm hole in the middle"
PLATE = """\
import cadquery as cq

result = cq.Workplane("XY").box(40, 30, 10).faces(">Z").workplane().hole(8)
"""
PLATE_VOLUME = 40 * 30 * 10 - math.pi * 4**2 * 10
BOOM = 'import cadquery as cq\n\nraise ValueError("boom")\n'


def fenced(script: str) -> ScriptedReply:
    return ScriptedReply(f"Here is the script:\n```python\n{script}```\nIt fits the printer.")


def names_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key="sk-cad-test") as server:
        yield server


def provider(
    fake: FakeOpenAI, session: aiohttp.ClientSession, sandbox: SandboxOptions | None = None
) -> CadQueryProvider:
    options = ModelOptions(url=fake.url, api_key="sk-cad-test", model="kitty-auto")
    return CadQueryProvider(ChatModel(session, options), sandbox or SandboxOptions(timeout_s=30))


def task(
    out_dir: Path, *, variant: int = 0, variants: int = 1, parent: Artifact | None = None
) -> VariantTask:
    return VariantTask(
        request=GenerateRequest(
            prompt=PROMPT if parent is None else "make the hole 12 mm",
            provider=ProviderName.CADQUERY,
            variants=variants,
            parent_id=parent.id if parent is not None else None,
        ),
        variant=variant,
        variants=variants,
        parent=parent,
        printer=PRUSA_MK4,
        material=Material.PLA,
        density_g_cm3=PLA,
        out_dir=out_dir,
    )


def messages(fake: FakeOpenAI, index: int) -> list[dict[str, Any]]:
    body = fake.requests[index].body
    assert isinstance(body["messages"], list)
    return body["messages"]


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "variant-0"
    folder.mkdir()
    return folder


async def test_valid_script_makes_the_part(
    fake: FakeOpenAI, session: aiohttp.ClientSession, out_dir: Path
) -> None:
    fake.enqueue(fenced(PLATE))

    result = await provider(fake, session).generate(task(out_dir))

    assert result.script == PLATE
    assert result.repair_rounds == 0
    assert set(result.files) == {FileKind.STEP, FileKind.STL, FileKind.THREE_MF, FileKind.SCRIPT}
    assert names_in(out_dir) == ["part.3mf", "part.py", "part.step", "part.stl"]
    assert result.files[FileKind.SCRIPT].read_text() == PLATE
    assert result.metrics.volume_mm3 == pytest.approx(PLATE_VOLUME, rel=1e-4)
    assert result.metrics.bbox_mm == pytest.approx((40, 30, 10))
    assert result.metrics.mass_g == pytest.approx(PLATE_VOLUME / 1000 * PLA, rel=1e-4)
    assert len(fake.requests) == 1
    assert fake.requests[0].body["temperature"] == 0.2
    system, user = messages(fake, 0)
    assert system["role"] == "system"
    assert f"250{TIMES}210{TIMES}220 mm" in system["content"]
    assert "`import cadquery as cq`" in system["content"]
    assert "`result`" in system["content"]
    assert user == {"role": "user", "content": PROMPT}


async def test_failed_script_is_repaired_from_its_error(
    fake: FakeOpenAI, session: aiohttp.ClientSession, out_dir: Path
) -> None:
    fake.enqueue(fenced(BOOM), fenced(PLATE))

    result = await provider(fake, session).generate(task(out_dir))

    assert result.repair_rounds == 1
    assert result.script == PLATE
    assert result.metrics.volume_mm3 == pytest.approx(PLATE_VOLUME, rel=1e-4)
    assert names_in(out_dir) == ["part.3mf", "part.py", "part.step", "part.stl"]
    assert len(fake.requests) == 2
    *_, answer, repair = messages(fake, 1)
    assert answer["role"] == "assistant"
    assert 'raise ValueError("boom")' in answer["content"]
    assert repair == {
        "role": "user",
        "content": "Your script failed: ValueError: boom (line 3). Fix it and answer with"
        " the whole corrected script.",
    }


@pytest.mark.parametrize(
    ("script", "error"),
    [
        ("import os\nresult = os.getcwd()\n", "import of 'os' is not allowed"),
        ("import socket\n", "import of 'socket' is not allowed"),
        (
            "import cadquery as cq\nwhile True:\n    pass\n",
            "the script ran longer than 2 s and was stopped",
        ),
    ],
    ids=["os", "socket", "infinite-loop"],
)
async def test_script_failing_every_round_fails_the_variant(
    fake: FakeOpenAI, session: aiohttp.ClientSession, out_dir: Path, script: str, error: str
) -> None:
    fake.respond_with(lambda body: fenced(script))
    sandbox = SandboxOptions(timeout_s=2, repair_rounds=1)

    with pytest.raises(ProviderError) as raised:
        await provider(fake, session, sandbox).generate(task(out_dir))

    message = str(raised.value)
    assert message.startswith("the model's CadQuery script failed after 1 repair rounds: ")
    assert error in message
    assert len(fake.requests) == 1 + sandbox.repair_rounds
    assert error in messages(fake, 1)[-1]["content"]
    assert names_in(out_dir) == []


async def test_child_changes_the_parents_script_as_another_variant(
    fake: FakeOpenAI, session: aiohttp.ClientSession, out_dir: Path
) -> None:
    parent = Artifact(
        id="art-parent",
        job_id="job-parent",
        variant=0,
        prompt=PROMPT,
        provider=ProviderName.CADQUERY,
        script=PLATE,
        printer=PRUSA_MK4.name,
        material=Material.PLA,
        metrics=PartMetrics(volume_mm3=PLATE_VOLUME, bbox_mm=(40, 30, 10), mass_g=14.3, solids=1),
        files=[],
        created_at=datetime.now(UTC),
    )
    child = PLATE.replace("hole(8)", "hole(12)")
    fake.enqueue(fenced(child))

    result = await provider(fake, session).generate(
        task(out_dir, variant=1, variants=2, parent=parent)
    )

    assert result.script == child
    assert result.metrics.volume_mm3 == pytest.approx(40 * 30 * 10 - math.pi * 6**2 * 10, rel=1e-4)
    assert fake.requests[0].body["temperature"] == 0.8
    user = messages(fake, 0)[1]["content"]
    assert PLATE.strip() in user
    assert "Change it as asked: make the hole 12 mm" in user
    assert "design 2 of 2" in user


async def test_model_error_fails_the_variant(
    fake: FakeOpenAI, session: aiohttp.ClientSession, out_dir: Path
) -> None:
    fake.enqueue(ScriptedError(500))

    with pytest.raises(ProviderError, match=r"^the model answered HTTP 500$"):
        await provider(fake, session).generate(task(out_dir))

    assert names_in(out_dir) == []


async def test_unavailable_without_a_model(
    fake: FakeOpenAI, session: aiohttp.ClientSession
) -> None:
    unconfigured = CadQueryProvider(ChatModel(session, ModelOptions()), SandboxOptions())

    assert unconfigured.name == ProviderName.CADQUERY
    assert await unconfigured.unavailable_reason() == "no model is configured"
    assert await provider(fake, session).unavailable_reason() is None
