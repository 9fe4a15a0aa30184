"""Bodies of the CAD service's HTTP API and payloads of its MQTT job events.

The same models are what `POST /api/cad/generate` takes, what `GET /api/cad/jobs/{id}`
and `GET /api/cad/artifacts/{id}` answer, and what `kitty/cad/job` carries, so Home
Assistant reads one shape wherever it looks. They need no CAD kernel: the integration
imports them. Lengths are millimetres throughout.
"""

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Parameter values a part family takes: lengths, counts, switches and choices.
type ParameterValue = float | int | bool | str
MAX_VARIANTS = 4
MAX_PROMPT_LENGTH = 2000


class Material(StrEnum):
    """A filament the slicer has a profile for."""

    PLA = "pla"
    PETG = "petg"
    ABS = "abs"
    ASA = "asa"
    TPU = "tpu"


class ProviderName(StrEnum):
    """Who turns a request into geometry."""

    # A part family of KITTY's own library, filled in from parameters or by a model.
    PARAMETRIC = "parametric"
    # A CadQuery script a model writes, run in a sandbox.
    CADQUERY = "cadquery"
    # Zoo's text-to-CAD (B-rep), a paid cloud.
    ZOO = "zoo"
    # Tripo's text-to-mesh, a paid cloud, for organic shapes.
    TRIPO = "tripo"


class JobState(StrEnum):
    """Where a CAD job is."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class FileKind(StrEnum):
    """What an artifact file holds."""

    STEP = "step"
    STL = "stl"
    THREE_MF = "3mf"
    PREVIEW = "png"
    GCODE = "gcode"
    # The CadQuery script a model wrote.
    SCRIPT = "py"


class GenerateRequest(BaseModel):
    """Body of `POST /api/cad/generate`: what to make, how many ways, for which printer."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_PROMPT_LENGTH,
        description="What the part is, in the user's words.",
    )
    family: str | None = Field(
        default=None, description="A part family of the library; skips the model's choice."
    )
    parameters: dict[str, ParameterValue] = Field(
        default_factory=dict,
        description="Family parameters in mm; with a parent, they override the parent's.",
    )
    provider: ProviderName | None = Field(
        default=None, description="Who makes the part; unset, the library first, then CadQuery."
    )
    variants: int = Field(default=1, ge=1, le=MAX_VARIANTS)
    printer: str | None = Field(
        default=None, description="A printer profile of the service; unset, its default."
    )
    material: Material = Material.PLA
    conversation_id: str | None = Field(default=None, min_length=1, max_length=128)
    parent_id: str | None = Field(
        default=None, description="The artifact this one changes; the new one is its child."
    )
    slice: bool = Field(default=True, description="Also slice the part to G-code.")

    @model_validator(mode="after")
    def _says_what_to_make(self) -> GenerateRequest:
        if self.prompt is None and self.family is None and self.parent_id is None:
            raise ValueError("give a prompt, a family or a parent artifact")
        return self


class ArtifactFile(BaseModel):
    """One file of an artifact, served at `GET /api/cad/artifacts/{id}/files/{name}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FileKind
    name: str
    size: int = Field(ge=0)
    sha256: str = Field(min_length=64, max_length=64)


class PartMetrics(BaseModel):
    """What the part measures."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    volume_mm3: float = Field(gt=0)
    # Extents along x, y and z.
    bbox_mm: tuple[float, float, float]
    mass_g: float = Field(ge=0, description="Solid volume times the material's density.")
    solids: int = Field(ge=1)


class SliceEstimate(BaseModel):
    """What the slicer expects the print to take."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    printer: str
    material: Material
    print_time_s: float = Field(ge=0)
    filament_mm: float = Field(ge=0)
    filament_g: float = Field(ge=0)
    slicer: str = Field(description="Slicer and version that wrote the G-code.")


class Artifact(BaseModel):
    """One generated part: its files, its numbers and where it came from. Never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="CadArtifact")

    id: str
    job_id: str
    parent_id: str | None = None
    variant: int = Field(ge=0, description="Which variant of its job this is, from 0.")
    prompt: str | None = None
    provider: ProviderName
    family: str | None = None
    parameters: dict[str, ParameterValue] = Field(default_factory=dict)
    script: str | None = Field(default=None, description="The CadQuery script, when one ran.")
    conversation_id: str | None = None
    printer: str
    material: Material
    metrics: PartMetrics
    slice: SliceEstimate | None = None
    files: list[ArtifactFile]
    created_at: datetime


class VariantResult(BaseModel):
    """How one variant of a job went."""

    model_config = ConfigDict(extra="forbid")

    variant: int = Field(ge=0)
    state: JobState
    provider: ProviderName | None = None
    artifact_id: str | None = None
    error: str | None = None
    repair_rounds: int = Field(default=0, ge=0)


class CadJob(BaseModel):
    """Body of `GET /api/cad/jobs/{id}` and of the 202 answer to a generate request."""

    model_config = ConfigDict(extra="forbid", title="CadJob")

    id: str
    state: JobState
    progress: float = Field(ge=0, le=1)
    request: GenerateRequest
    variants: list[VariantResult] = Field(default_factory=list)
    error: str | None = None
    created_at: datetime
    updated_at: datetime


class CadJobEvent(BaseModel):
    """Payload of `kitty/cad/job`: one event per change of a job."""

    model_config = ConfigDict(extra="forbid", title="CadJobEvent")

    v: Literal[1] = 1
    job_id: str
    state: JobState
    progress: float = Field(ge=0, le=1)
    message: str | None = None
    artifact_ids: list[str] = Field(default_factory=list)
    conversation_id: str | None = None
    at: datetime


class Lineage(BaseModel):
    """Body of `GET /api/cad/artifacts/{id}/lineage`."""

    model_config = ConfigDict(extra="forbid")

    artifact: Artifact
    # Parent first, then its parent, up to the first artifact.
    ancestors: list[Artifact]
    children: list[Artifact]


class PartFamilyInfo(BaseModel):
    """One entry of `GET /api/cad/families`."""

    model_config = ConfigDict(extra="forbid")

    name: str
    title: str
    description: str
    parameters_schema: dict[str, object] = Field(description="JSON schema of the parameters.")


class PrinterProfileInfo(BaseModel):
    """One entry of `GET /api/cad/printers`."""

    model_config = ConfigDict(extra="forbid")

    name: str
    build_volume_mm: tuple[float, float, float]
    default: bool
