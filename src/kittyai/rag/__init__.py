"""KITTY knowledge: document ingest, embeddings, hybrid search and project memory."""

from kittyai.catalog import ServiceName
from kittyai.rag.options import RagOptions
from kittyai.service import Service, ServiceRuntime


async def setup(runtime: ServiceRuntime[RagOptions]) -> None:
    """Open the knowledge base and project memory, start the watcher and serve the API."""
    # Imported here: the options and the contract are read without numpy, pypdf and
    # the embedding model, which the service itself loads.
    from kittyai.rag.api import serve  # noqa: PLC0415

    await serve(runtime)


SERVICE = Service(name=ServiceName.RAG, options_model=RagOptions, setup=setup)
