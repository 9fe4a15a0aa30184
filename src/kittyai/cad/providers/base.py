"""What every CAD provider implements: one variant of a request in, one part out."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kittyai.cad.options import PrinterProfile
from kittyai.contract.cad import (
    Artifact,
    FileKind,
    GenerateRequest,
    Material,
    ParameterValue,
    PartMetrics,
    ProviderName,
)

# Why a provider that needs a model cannot work.
NO_MODEL = "no model is configured"
# A model answers its likeliest part first; later variants ask it to wander further.
FIRST_VARIANT_TEMPERATURE = 0.2
OTHER_VARIANT_TEMPERATURE = 0.8


class ProviderError(Exception):
    """A variant could not be made; the message says why, for the user."""

    def __init__(self, message: str, *, repair_rounds: int = 0) -> None:
        """Fail with `message`, after `repair_rounds` rounds of asking a model to fix it."""
        super().__init__(message)
        self.repair_rounds = repair_rounds


@dataclass(frozen=True, slots=True, kw_only=True)
class VariantTask:
    """One variant to make."""

    request: GenerateRequest
    # Which variant of the job this is, from 0; of `variants` in all.
    variant: int
    variants: int
    # The artifact being changed, for a child.
    parent: Artifact | None
    printer: PrinterProfile
    material: Material
    density_g_cm3: float
    # An empty folder of the variant's own; the provider writes its files there.
    out_dir: Path

    @property
    def temperature(self) -> float:
        """Return the sampling temperature a model is asked with for this variant."""
        return FIRST_VARIANT_TEMPERATURE if self.variant == 0 else OTHER_VARIANT_TEMPERATURE


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderResult:
    """The part a provider made. Preview and G-code are added by the job, not the provider."""

    # At least an STL; STEP whenever the provider works in B-rep.
    files: dict[FileKind, Path]
    metrics: PartMetrics
    family: str | None = None
    parameters: dict[str, ParameterValue] = field(default_factory=dict)
    script: str | None = None
    repair_rounds: int = 0


class CadProvider(Protocol):
    """Turns a variant task into a part."""

    @property
    def name(self) -> ProviderName:
        """Return the provider's name."""
        ...

    async def unavailable_reason(self) -> str | None:
        """Return why the provider cannot be used now (no key, no model), or None."""
        ...

    async def generate(self, task: VariantTask) -> ProviderResult:
        """Make the variant's part in `task.out_dir`; raise ProviderError if it cannot."""
        ...
