"""Options of the CAD service: printers, materials, the model it asks, the clouds it may use."""

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from kittyai.chat_model import ModelOptions
from kittyai.contract.cad import Material
from kittyai.options import ServiceOptions

# g/cm³, from the filament makers' datasheets (Prusament, Polymaker).
MATERIAL_DENSITY: dict[Material, float] = {
    Material.PLA: 1.24,
    Material.PETG: 1.27,
    Material.ABS: 1.04,
    Material.ASA: 1.07,
    Material.TPU: 1.21,
}


class PrinterProfile(BaseModel):
    """A printer parts are made for: its build volume and the slicer profile it prints with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    # Flat rather than a tuple: app options allow one level of nesting.
    build_x_mm: float = Field(gt=0, le=2000)
    build_y_mm: float = Field(gt=0, le=2000)
    build_z_mm: float = Field(gt=0, le=2000)
    # A shipped printer ini (`kittyai/cad/profiles/printers/<name>.ini`) or an absolute path.
    slicer_profile: str = "generic"

    @property
    def build_volume(self) -> tuple[float, float, float]:
        """Return the build volume's extents along x, y and z."""
        return (self.build_x_mm, self.build_y_mm, self.build_z_mm)


DEFAULT_PRINTERS = [
    PrinterProfile(
        name="prusa_mk4",
        build_x_mm=250,
        build_y_mm=210,
        build_z_mm=220,
        slicer_profile="prusa_mk4",
    ),
    PrinterProfile(
        name="generic", build_x_mm=220, build_y_mm=220, build_z_mm=250, slicer_profile="generic"
    ),
]


class SandboxOptions(BaseModel):
    """Limits of the subprocess a model's CadQuery script runs in."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(default=60.0, gt=0, le=600)
    # Address space: loading CadQuery and OCCT maps about 1.25 GiB; below that the
    # sandbox reports that the kernel could not be loaded.
    memory_mb: int = Field(default=2048, ge=512, le=16384)
    # Times the error goes back to the model before the variant fails.
    repair_rounds: int = Field(default=2, ge=0, le=5)


class CloudOptions(BaseModel):
    """Paid text-to-CAD clouds; each stays off without its key."""

    model_config = ConfigDict(extra="forbid")

    zoo_api_key: SecretStr | None = None
    zoo_url: str = "https://api.zoo.dev"
    tripo_api_key: SecretStr | None = None
    tripo_url: str = "https://openapi.tripo3d.ai"
    timeout: float = Field(default=600.0, gt=0)


class CadOptions(ServiceOptions):
    """Options of the CAD service."""

    printers: list[PrinterProfile] = Field(default_factory=lambda: list(DEFAULT_PRINTERS))
    default_printer: str | None = Field(
        default=None, description="A printer name; unset, the first printer."
    )
    model: ModelOptions = Field(default_factory=ModelOptions)
    sandbox: SandboxOptions = Field(default_factory=SandboxOptions)
    cloud: CloudOptions = Field(default_factory=CloudOptions)
    # Where artifact files go: a share folder people and printers can reach.
    artifacts_dir: str | None = Field(
        default=None, description="Unset: `artifacts/` in the data dir."
    )
    # PrusaSlicer's command line; unset or missing, parts are not sliced.
    slicer_command: str = "prusa-slicer"

    @model_validator(mode="after")
    def _check_printers(self) -> Self:
        names = [printer.name for printer in self.printers]
        if not names:
            raise ValueError("at least one printer is needed")
        if len(set(names)) != len(names):
            raise ValueError("printer names must be unique")
        if self.default_printer is not None and self.default_printer not in names:
            raise ValueError(f"default printer {self.default_printer!r} is not a printer name")
        return self

    def printer(self, name: str | None) -> PrinterProfile | None:
        """Return the printer called `name` (the default one for None), or None."""
        wanted = name or self.default_printer or self.printers[0].name
        return next((printer for printer in self.printers if printer.name == wanted), None)
