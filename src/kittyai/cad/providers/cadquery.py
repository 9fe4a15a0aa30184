"""Parts a model writes as CadQuery scripts, run in the sandbox and repaired from errors.

The model gets the rules (CadQuery 2.8, millimetres, one solid called `result`, the
printer's build volume) and the request; for a child of a scripted part, the parent's
script to change. Whatever the script does wrong, refused imports, exceptions with
their line, a part too large, a timeout, goes back to the model as a new turn, up to
the sandbox's repair rounds.
"""

import asyncio
from pathlib import Path
import re

from kittyai.cad.geometry import TIMES
from kittyai.cad.options import SandboxOptions
from kittyai.cad.providers.base import NO_MODEL, ProviderError, ProviderResult, VariantTask
from kittyai.cad.sandbox import ScriptRun, run_script
from kittyai.chat_model import ChatModel, Message, ModelError
from kittyai.contract.cad import FileKind, ProviderName

SCRIPT_NAME = "part.py"
# The first fenced block, whatever its language tag; a cut-off answer may not close it.
_FENCED = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_SYSTEM_PROMPT = """\
You write CadQuery 2.8 Python scripts that build one 3D-printable part.
Rules:
- Units are millimetres.
- Import only `import cadquery as cq` and `math`; nothing else is available.
- Assign the finished part to a variable named `result`: one single solid.
- The part must fit within the printer's build volume of {volume} mm (x, y, z).
- No file access, no network access, no printing.
Answer with one ```python code block holding the whole script, and nothing else."""


class CadQueryProvider:
    """Asks a model for a CadQuery script and runs it in the sandbox."""

    def __init__(self, model: ChatModel, sandbox: SandboxOptions) -> None:
        """Write scripts with `model`, run them within the `sandbox` limits."""
        self._model = model
        self._sandbox = sandbox

    @property
    def name(self) -> ProviderName:
        """Return the provider's name."""
        return ProviderName.CADQUERY

    async def unavailable_reason(self) -> str | None:
        """Return why no script can be written now: without a model, none can."""
        return None if self._model.configured else NO_MODEL

    async def generate(self, task: VariantTask) -> ProviderResult:
        """Have the model write the part's script, repairing it from its errors.

        Raises:
            ProviderError: The request says nothing to model, the model could not be
                asked, or its script still failed after the last repair round.
        """
        messages: list[Message] = [
            {"role": "system", "content": _system_prompt(task)},
            {"role": "user", "content": _request_text(task)},
        ]
        rounds = self._sandbox.repair_rounds
        error = None
        for repair_round in range(rounds + 1):
            try:
                answer = await self._model.complete(messages, temperature=task.temperature)
            except ModelError as err:
                raise ProviderError(str(err)) from None
            script = extract_script(answer)
            run = await self._run(script, task)
            if run.ok and run.metrics is not None:
                files = {**run.files, FileKind.SCRIPT: await _save_script(script, task.out_dir)}
                return ProviderResult(
                    files=files, metrics=run.metrics, script=script, repair_rounds=repair_round
                )
            error = run.error
            messages += [
                {"role": "assistant", "content": answer},
                {
                    "role": "user",
                    "content": f"Your script failed: {error}. Fix it and answer with the"
                    " whole corrected script.",
                },
            ]
        raise ProviderError(
            f"the model's CadQuery script failed after {rounds} repair rounds: {error}",
            repair_rounds=rounds,
        )

    async def _run(self, script: str, task: VariantTask) -> ScriptRun:
        return await run_script(
            script,
            task.out_dir,
            build_volume=task.printer.build_volume,
            density_g_cm3=task.density_g_cm3,
            options=self._sandbox,
        )


def extract_script(answer: str) -> str:
    """Return the script in the model's answer: its first fenced block, else all of it."""
    match = _FENCED.search(answer)
    return (match.group(1) if match else answer).strip() + "\n"


def _system_prompt(task: VariantTask) -> str:
    return _SYSTEM_PROMPT.format(volume=TIMES.join(f"{v:g}" for v in task.printer.build_volume))


def _request_text(task: VariantTask) -> str:
    """Return the user turn: the request, the parent's script to change, the variant."""
    prompt = task.request.prompt
    parent_script = task.parent.script if task.parent is not None else None
    if parent_script is not None:
        change = prompt or "Make another version of it."
        text = (
            "This script makes the part to change:\n"
            f"```python\n{parent_script.strip()}\n```\n"
            f"Change it as asked: {change}\n"
            "Answer with the whole modified script."
        )
    elif prompt is not None:
        text = prompt
    else:
        raise ProviderError("a CadQuery part needs a prompt saying what to make")
    if task.variant > 0:
        text += (
            f"\n\nThis is design {task.variant + 1} of {task.variants}: choose a different"
            " reasonable design from the most obvious one, still meeting the request."
        )
    return text


async def _save_script(script: str, out_dir: Path) -> Path:
    path = out_dir / SCRIPT_NAME
    await asyncio.to_thread(path.write_text, script, encoding="utf-8")
    return path
