"""Run a KITTY service: the shared lifecycle, and the runtime a service builds on.

A service is declared once, in its package::

    async def setup(runtime: ServiceRuntime[RouterOptions]) -> None:
        runtime.app.router.add_post("/v1/chat/completions", ...)
        runtime.create_background_task(watch_models(runtime), "watch-models")
        runtime.mqtt.set_retained(MODELS.topic(runtime.service), models)
        runtime.on_stop(close_database)

    SERVICE = Service(name=ServiceName.ROUTER, options_model=RouterOptions, setup=setup)

and its `__main__` calls `main(SERVICE)`. The runner does the rest: data dir and
identity, JSON logs, the MQTT link with availability and info, the HTTP server
with `/health`, `/metrics` and `/api/info`, Supervisor discovery, and a clean
stop on SIGTERM or SIGINT.
"""

import argparse
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
import logging
import os
from pathlib import Path
import signal
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector
from pydantic import BaseModel, SecretStr, ValidationError

from kittyai import __version__
from kittyai.catalog import SERVICES, ServiceName
from kittyai.contract import INFO, ServiceInfo
from kittyai.discovery import DiscoveryAnnouncer
from kittyai.http_server import create_app
from kittyai.identity import Identity
from kittyai.logs import SecretRedactor, configure_logging
from kittyai.mqtt import BrokerConfig, MqttLink
from kittyai.options import MqttOptions, ServiceOptions
from kittyai.supervisor import SUPERVISOR_TOKEN_ENV, SupervisorClient, SupervisorError
from kittyai.validation import describe_errors

_LOGGER = logging.getLogger(__name__)

HEALTH_PATH = "/health"
INFO_PATH = "/api/info"
# What an app container has; a plain process passes --options and --data.
DEFAULT_OPTIONS_PATH = Path("/data/options.json")
DEFAULT_DATA_DIR = Path("/data")
# The Supervisor's default stop timeout is 10 s; leave room for MQTT and discovery.
HTTP_SHUTDOWN_TIMEOUT = 5.0

type StopCallback = Callable[[], Awaitable[object]]


@dataclass(slots=True, kw_only=True)
class ServiceRuntime[OptionsT: ServiceOptions]:
    """What a running service's code works with; `Service.setup` receives it."""

    service: ServiceName
    options: OptionsT
    data_dir: Path
    identity: Identity
    info: ServiceInfo
    # The HTTP port `app` is served on.
    port: int
    # Add routes during `setup`: aiohttp freezes the app once it serves.
    app: web.Application
    mqtt: MqttLink
    # The service's own registry: its metrics appear on its `/metrics`.
    metrics: CollectorRegistry
    # For outgoing HTTP; closed by the runner.
    session: aiohttp.ClientSession
    _background_tasks: set[asyncio.Task[Any]] = field(default_factory=set, init=False, repr=False)
    _stop_callbacks: list[StopCallback] = field(default_factory=list, init=False, repr=False)

    def create_background_task(
        self, coro: Coroutine[Any, Any, Any], name: str
    ) -> asyncio.Task[Any]:
        """Run `coro` for the life of the service; it is cancelled on stop.

        A task that fails is logged with its traceback; the service keeps running.
        """
        task = asyncio.create_task(coro, name=f"kitty-{self.service}-{name}")
        self._background_tasks.add(task)
        task.add_done_callback(self._background_task_done)
        return task

    def on_stop(self, callback: StopCallback) -> None:
        """Await `callback` on stop, after background tasks ended; newest first."""
        self._stop_callbacks.append(callback)

    def _background_task_done(self, task: asyncio.Task[Any]) -> None:
        self._background_tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            _LOGGER.error("Background task %s failed", task.get_name(), exc_info=error)

    async def _stop(self) -> None:
        tasks = list(self._background_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for callback in reversed(self._stop_callbacks):
            try:
                await callback()
            except Exception:
                # One failing cleanup must not keep the others from running.
                _LOGGER.exception("Stop callback %r failed", callback)


type SetupHook[OptionsT: ServiceOptions] = Callable[[ServiceRuntime[OptionsT]], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Service[OptionsT: ServiceOptions]:
    """What sets one service apart: its name, options, and what it adds to the runtime."""

    name: ServiceName
    options_model: type[OptionsT]
    # Adds the service's routes, background tasks, retained state and stop callbacks.
    setup: SetupHook[OptionsT] | None = None
    # One service announces the stack to Home Assistant, so one config flow appears.
    announce_discovery: bool = False


@asynccontextmanager
async def running[OptionsT: ServiceOptions](
    service: Service[OptionsT],
    options: OptionsT,
    data_dir: Path,
    *,
    redactor: SecretRedactor,
) -> AsyncIterator[ServiceRuntime[OptionsT]]:
    """Start `service` and yield its runtime; leaving the block stops it cleanly.

    Stop order: discovery withdrawn, HTTP server closed, background tasks
    cancelled, stop callbacks, MQTT `offline` published, session closed.
    """
    identity = await asyncio.to_thread(Identity.load, data_dir, options.api_token)
    redactor.add(identity.api_token)
    for secret in _secrets_of(options):
        redactor.add(secret)
    redactor.add(os.environ.get(SUPERVISOR_TOKEN_ENV))
    async with AsyncExitStack() as cleanups:
        session = await cleanups.enter_async_context(aiohttp.ClientSession())
        supervisor = SupervisorClient.from_env(session)
        broker = await _resolve_broker(options.mqtt, supervisor)
        if broker is not None:
            redactor.add(broker.password)
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        runtime = ServiceRuntime(
            service=service.name,
            options=options,
            data_dir=data_dir,
            identity=identity,
            info=ServiceInfo(
                service=service.name,
                instance_id=identity.instance_id,
                version=__version__,
                started_at=datetime.now(UTC),
            ),
            port=options.port or SERVICES[service.name].default_port,
            app=create_app(
                api_token=identity.api_token,
                registry=registry,
                public_paths={HEALTH_PATH},
                scoped_tokens={
                    scoped.token.get_secret_value(): (scoped.name, frozenset(scoped.scopes))
                    for scoped in options.scoped_tokens
                },
            ),
            mqtt=MqttLink(
                service.name,
                broker,
                client_id=f"kitty-{service.name}-{identity.instance_id[:8]}",
                registry=registry,
            ),
            metrics=registry,
            session=session,
        )
        _add_builtin_routes(runtime)
        runtime.mqtt.set_retained(INFO.topic(service.name), runtime.info, qos=INFO.qos)
        runtime.mqtt.start()
        cleanups.push_async_callback(runtime.mqtt.stop)

        cleanups.push_async_callback(runtime._stop)
        if service.setup is not None:
            await service.setup(runtime)

        http_runner = web.AppRunner(
            runtime.app,
            access_log=None,  # http_server logs one structured line per request
            handle_signals=False,
            shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT,
        )
        await http_runner.setup()
        cleanups.push_async_callback(http_runner.cleanup)
        await web.TCPSite(http_runner, options.bind, runtime.port).start()
        _LOGGER.info(
            "%s %s serving on http://%s:%d",
            SERVICES[service.name].title,
            __version__,
            options.bind,
            runtime.port,
        )

        if service.announce_discovery and supervisor is not None:
            announcer = DiscoveryAnnouncer(
                supervisor, port=runtime.port, api_token=identity.api_token
            )
            announcer.start()
            cleanups.push_async_callback(announcer.stop)

        yield runtime


def main[OptionsT: ServiceOptions](
    service: Service[OptionsT], argv: Sequence[str] | None = None
) -> None:
    """Run `service` as `python -m kittyai.<name>` until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog=f"python -m kittyai.{service.name}", description=SERVICES[service.name].title
    )
    parser.add_argument("--options", type=Path, default=DEFAULT_OPTIONS_PATH)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR)
    args = parser.parse_args(argv)

    redactor = SecretRedactor()
    try:
        options = service.options_model.load(args.options)
    except ValidationError as err:
        configure_logging(service.name, "info", redactor)
        _LOGGER.critical("Invalid options in %s: %s", args.options, describe_errors(err))
        raise SystemExit(2) from None
    configure_logging(service.name, options.log_level, redactor)
    try:
        asyncio.run(_serve_until_signalled(service, options, args.data, redactor))
    except Exception:
        _LOGGER.critical("%s stopped on an error", service.name, exc_info=True)
        raise SystemExit(1) from None
    _LOGGER.info("%s stopped", service.name)


async def _serve_until_signalled[OptionsT: ServiceOptions](
    service: Service[OptionsT], options: OptionsT, data_dir: Path, redactor: SecretRedactor
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with running(service, options, data_dir, redactor=redactor):
        await stop.wait()
        _LOGGER.info("Stopping %s", service.name)


async def _resolve_broker(
    options: MqttOptions | None, supervisor: SupervisorClient | None
) -> BrokerConfig | None:
    """Return the Supervisor's broker if there is one, else the configured one."""
    if supervisor is not None:
        try:
            return BrokerConfig.from_supervisor(await supervisor.get_mqtt_service())
        except SupervisorError as err:
            _LOGGER.warning("No MQTT broker from the Supervisor: %s", err)
    if options is not None:
        return BrokerConfig.from_options(options)
    _LOGGER.warning("No MQTT broker configured; MQTT is disabled")
    return None


def _secrets_of(value: object) -> Iterator[str]:
    """Yield every secret in the options: tokens, passwords, keys, database URLs."""
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        yield secret
        # A database URL's password also shows alone, e.g. in a driver's error.
        if "://" in secret and (password := urlsplit(secret).password):
            yield password
    elif isinstance(value, BaseModel):
        for field in type(value).model_fields:
            yield from _secrets_of(getattr(value, field))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _secrets_of(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _secrets_of(item)


def _add_builtin_routes(runtime: ServiceRuntime[Any]) -> None:
    async def health(_request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "service": runtime.service,
                "version": __version__,
                "mqtt": runtime.mqtt.state,
            }
        )

    async def info(_request: web.Request) -> web.Response:
        return web.json_response(text=runtime.info.model_dump_json())

    runtime.app.router.add_get(HEALTH_PATH, health)
    runtime.app.router.add_get(INFO_PATH, info)
