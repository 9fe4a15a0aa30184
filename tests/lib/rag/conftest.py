"""Shared helpers of the knowledge service tests: service processes and their API."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from kittyai.catalog import ServiceName
from kittyai.contract.rag import (
    IngestResult,
    KnowledgeStats,
    Note,
    NoteRequest,
    SearchRequest,
    SearchResponse,
)
from kittyai.rag_client import RagClient
from tests.helpers.net import loopback_sockets
from tests.helpers.services import Answer, ServiceApi, ServiceProcess

# Loading MiniLM's weights, and a first scan of the watch folder, on a busy machine.
STARTUP_TIMEOUT_S = 60.0
NO_TOKEN = ""


def rag_service(workdir: Path, *, mqtt_port: int | None = None, **options: Any) -> ServiceProcess:
    """Return a `python -m kittyai.rag` process (not started) sharing `workdir/share`."""
    share = workdir / "share"
    share.mkdir(exist_ok=True)
    return ServiceProcess(
        ServiceName.RAG,
        workdir,
        mqtt_port=mqtt_port,
        extra_options={"share_dir": str(share), "watch_interval_s": 1, **options},
    )


def start_rag_service(
    workdir: Path, *, mqtt_port: int | None = None, **options: Any
) -> ServiceProcess:
    """Start a knowledge service process; a module fixture may call this."""
    with loopback_sockets():
        process = rag_service(workdir, mqtt_port=mqtt_port, **options)
        process.start(timeout=STARTUP_TIMEOUT_S)
    return process


def share_of(process: ServiceProcess) -> Path:
    """Return the share folder of a process made by `rag_service`."""
    return process.options_path.parent / "share"


@dataclass(slots=True)
class RagApi(ServiceApi):
    """Calls one knowledge service process: as it is, or through the integration's client."""

    @property
    def client(self) -> RagClient:
        """Return the client the integration calls the service with."""
        return RagClient(self.session, self.process.url, self.process.token)

    async def upload(
        self, name: str, content: bytes, content_type: str | None = None, **fields: str
    ) -> Answer:
        form = aiohttp.FormData()
        for key, value in fields.items():
            form.add_field(key, value)
        form.add_field("file", content, filename=name, content_type=content_type)
        return await self.call("POST", "/api/ingest", data=form)

    @staticmethod
    def ingested(answer: Answer, status: int = 201) -> IngestResult:
        assert answer.status == status, answer.body
        return IngestResult.model_validate(answer.body)

    async def search(self, query: str, **filters: Any) -> SearchResponse:
        return await self.client.search(SearchRequest.model_validate({"query": query, **filters}))

    async def note(self, project: str, text: str, author: str = "ada") -> Note:
        return await self.client.add_note(project, NoteRequest(text=text, author=author))

    async def stats(self) -> KnowledgeStats:
        return await self.client.stats()
