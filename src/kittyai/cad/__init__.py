"""KITTY CAD: words to printable parts, with previews, G-code and lineage."""

from kittyai.cad.options import CadOptions
from kittyai.catalog import ServiceName
from kittyai.service import Service, ServiceRuntime


async def setup(runtime: ServiceRuntime[CadOptions]) -> None:
    """Open the store, resume unfinished jobs, start the job worker and serve the API."""
    # Imported here: the sandbox runner, the mesh and the preview modules live in this
    # package too, and importing them must not load the service and the CAD kernel.
    from kittyai.cad.api import serve  # noqa: PLC0415

    await serve(runtime)


SERVICE = Service(name=ServiceName.CAD, options_model=CadOptions, setup=setup)
