"""KITTY orchestrator: durable runs with approvals, retries and rollback."""

from kittyai.catalog import ServiceName
from kittyai.orchestrator.options import OrchestratorOptions
from kittyai.service import Service, ServiceRuntime


async def setup(runtime: ServiceRuntime[OrchestratorOptions]) -> None:
    """Open the database, start the engine and the work queue, and serve the API."""
    # Imported here: the options and the contract are read without DBOS and
    # SQLAlchemy, which only the service itself needs.
    from kittyai.orchestrator.api import serve  # noqa: PLC0415

    await serve(runtime)


SERVICE = Service(name=ServiceName.ORCHESTRATOR, options_model=OrchestratorOptions, setup=setup)
