"""Options of the orchestrator: its database, the peers its templates act on, its policies."""

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from kittyai.options import ServiceOptions


class DatabaseOptions(BaseModel):
    """Where runs and the engine's state live."""

    model_config = ConfigDict(extra="forbid")

    # Unset: SQLite files in the data dir (one machine). A PostgreSQL URL such as
    # `postgresql://kitty@nas/kitty` lets workers on other machines share the work.
    url: SecretStr | None = None


class HomeAssistantOptions(BaseModel):
    """How the templates reach Home Assistant Core."""

    model_config = ConfigDict(extra="forbid")

    # Unset: through the Supervisor's Core proxy, with the app's Supervisor token.
    url: str | None = None
    token: SecretStr | None = None
    # Where the app sees Home Assistant's configuration (`map: homeassistant_config`).
    config_dir: str = "/homeassistant"


class PeerOptions(BaseModel):
    """A KITTY service a template calls (CAD, knowledge); unset URL means not available."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    token: SecretStr | None = None


class AppUpdatePolicy(BaseModel):
    """What `app_update` may do on its own."""

    model_config = ConfigDict(extra="forbid")

    # App slugs (globs, e.g. `core_*`) whose update waits for a human.
    protected_apps: list[str] = Field(default_factory=lambda: ["core_mosquitto"])
    # How long the updated app has to come up and pass its health check.
    health_timeout_s: float = Field(default=120.0, gt=0, le=3600)


class ConfigChangePolicy(BaseModel):
    """Which files under the Home Assistant configuration `config_change` may touch."""

    model_config = ConfigDict(extra="forbid")

    # Globs relative to the configuration folder; nothing else can be patched.
    allowed_paths: list[str] = Field(
        default_factory=lambda: [
            "automations.yaml",
            "scripts.yaml",
            "scenes.yaml",
            "configuration.yaml",
            "packages/*.yaml",
            "packages/**/*.yaml",
        ]
    )
    # Patching these waits for a human first.
    protected_paths: list[str] = Field(default_factory=lambda: ["configuration.yaml"])
    # How long a verification may wait for its condition to hold.
    verify_timeout_s: float = Field(default=30.0, gt=0, le=3600)


class Policies(BaseModel):
    """Approval and safety policies, per template, as the templates see them."""

    model_config = ConfigDict(extra="forbid")

    app_update: AppUpdatePolicy = Field(default_factory=AppUpdatePolicy)
    config_change: ConfigChangePolicy = Field(default_factory=ConfigChangePolicy)


class QuotaOptions(BaseModel):
    """How much runs at once."""

    model_config = ConfigDict(extra="forbid")

    # Runs of one template at once; more wait `queued`.
    runs_per_template: int = Field(default=4, ge=1, le=1000)
    # Exceptions by template name, e.g. {"app_update": 1}.
    template_overrides: dict[str, int] = Field(default_factory=lambda: {"app_update": 1})

    def limit(self, template: str) -> int:
        """Return how many runs of `template` may be active at once."""
        return self.template_overrides.get(template, self.runs_per_template)


class OrchestratorOptions(ServiceOptions):
    """Options of the orchestrator."""

    database: DatabaseOptions = Field(default_factory=DatabaseOptions)
    home_assistant: HomeAssistantOptions = Field(default_factory=HomeAssistantOptions)
    cad: PeerOptions = Field(default_factory=PeerOptions)
    knowledge: PeerOptions = Field(default_factory=PeerOptions)
    # Top-level rather than under one `policies` key: the Supervisor's options
    # schema nests two levels at most.
    app_update: AppUpdatePolicy = Field(default_factory=AppUpdatePolicy)
    config_change: ConfigChangePolicy = Field(default_factory=ConfigChangePolicy)
    quotas: QuotaOptions = Field(default_factory=QuotaOptions)
    # Artifact files of runs finished longer ago are removed; the records stay.
    retention_days: float = Field(default=30.0, gt=0, le=3650)
    # A worker that neither heartbeats nor completes within this loses its step.
    lease_timeout_s: float = Field(default=30.0, ge=1, le=3600)
    # SSE comments keep proxies from closing a quiet stream.
    sse_heartbeat_s: float = Field(default=15.0, ge=0.1, le=300)
    # Writes (creating, deciding, cancelling, retrying) per token and minute.
    writes_per_minute: int = Field(default=120, ge=1, le=100_000)
    write_burst: int = Field(default=30, ge=1, le=100_000)

    @property
    def policies(self) -> Policies:
        """Return the templates' policies."""
        return Policies(app_update=self.app_update, config_change=self.config_change)
