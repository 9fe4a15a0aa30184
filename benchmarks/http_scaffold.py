"""What KITTY's service plumbing costs over the bare libraries.

HTTP: a bare aiohttp app and a real KITTY service (`kittyai.service.running`,
with JSON access logs at info level going to /dev/null as in production) answer
the same JSON; aiohttp clients on 127.0.0.1 fire sequential and concurrent
requests at both.

MQTT: QoS 1 messages through `MqttLink.publish_event` versus raw
`aiomqtt.Client.publish`, timed until a subscriber has received the last one.
The broker is `--mqtt-port`, or a Mosquitto this script starts on a free port.

    python benchmarks/http_scaffold.py [--requests 2000] [--concurrency 32]
        [--messages 5000] [--mqtt-port PORT]
"""

import argparse
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
import logging
import os
from pathlib import Path
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

import aiohttp
from aiohttp import web
import aiomqtt
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from kittyai import __version__
from kittyai.catalog import ServiceName
from kittyai.contract import ServiceInfo
from kittyai.logs import JsonFormatter, SecretRedactor
from kittyai.mqtt import BrokerConfig, MqttLink, MqttState
from kittyai.options import ServiceOptions
from kittyai.service import Service, running

TOKEN = "benchmark-token"  # noqa: S105
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
TOPIC = "kitty/router/benchmark"


@dataclass
class HttpResult:
    p50_ms: float
    p99_ms: float
    sequential_rps: float
    concurrent_rps: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def bare_app(port: int) -> AsyncIterator[str]:
    health = {"status": "ok", "service": "router", "version": __version__, "mqtt": "disabled"}
    info = ServiceInfo(
        service=ServiceName.ROUTER,
        instance_id="0123456789abcdef",
        version=__version__,
        started_at=datetime.now(UTC),
    )

    async def health_handler(_request: web.Request) -> web.Response:
        return web.json_response(health)

    async def info_handler(_request: web.Request) -> web.Response:
        return web.json_response(text=info.model_dump_json())

    app = web.Application()
    app.router.add_get("/health", health_handler)
    app.router.add_get("/api/info", info_handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def kitty_app(port: int, data_dir: Path) -> AsyncIterator[str]:
    options = ServiceOptions(
        bind="127.0.0.1", port=port, api_token=SecretStr(TOKEN), log_level="info"
    )
    service = Service(name=ServiceName.ROUTER, options_model=ServiceOptions)
    async with running(service, options, data_dir, redactor=SecretRedactor([TOKEN])):
        yield f"http://127.0.0.1:{port}"


async def measure_http(url: str, path: str, requests: int, concurrency: int) -> HttpResult:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:

        async def call() -> None:
            async with session.get(f"{url}{path}") as response:
                await response.read()
                assert response.status == 200, response.status

        for _ in range(100):  # warm up connections and code paths
            await call()
        latencies = []
        started = time.perf_counter()
        for _ in range(requests):
            before = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - before)
        sequential = time.perf_counter() - started

        gate = asyncio.Semaphore(concurrency)

        async def gated() -> None:
            async with gate:
                await call()

        started = time.perf_counter()
        await asyncio.gather(*(gated() for _ in range(requests)))
        concurrent = time.perf_counter() - started

    quantiles = statistics.quantiles(latencies, n=100)
    return HttpResult(
        p50_ms=quantiles[49] * 1000,
        p99_ms=quantiles[98] * 1000,
        sequential_rps=requests / sequential,
        concurrent_rps=requests / concurrent,
    )


async def time_until_received(
    port: int, count: int, publish_all: Callable[[], Awaitable[None]]
) -> float:
    """Return seconds from the first publish until the subscriber got `count` messages."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-subscriber") as subscriber:
        await subscriber.subscribe(TOPIC, qos=1)
        started = time.perf_counter()
        await publish_all()
        received = 0
        async for _message in subscriber.messages:
            received += 1
            if received == count:
                return time.perf_counter() - started
    raise AssertionError("unreachable")


async def measure_mqtt(port: int, count: int) -> tuple[float, float]:
    payload = b'{"v":1,"step":"print","state":"running"}'

    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-raw") as raw:

        async def publish_raw() -> None:
            for _ in range(count):
                await raw.publish(TOPIC, payload, qos=1)

        raw_seconds = await time_until_received(port, count, publish_raw)

    link = MqttLink(
        ServiceName.ROUTER,
        BrokerConfig("127.0.0.1", port),
        client_id="bench-link",
        registry=CollectorRegistry(),
        max_queued_events=count,
    )
    link.start()
    # Time publishing, not connecting; the link exposes its state, not an event.
    while link.state is not MqttState.CONNECTED:  # noqa: ASYNC110
        await asyncio.sleep(0.01)

    async def publish_link() -> None:
        for _ in range(count):
            link.publish_event(TOPIC, payload)

    link_seconds = await time_until_received(port, count, publish_link)
    await link.stop()
    return count / raw_seconds, count / link_seconds


@contextlib.contextmanager
def mosquitto(workdir: Path) -> Iterator[int]:
    port = free_port()
    config = workdir / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    process = subprocess.Popen(
        [MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("mosquitto did not start")
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait()


def route_access_logs_to_devnull() -> None:
    """Log like a service does (JSON, info level), without flooding the terminal."""
    handler = logging.FileHandler(os.devnull, encoding="utf-8")
    handler.setFormatter(JsonFormatter(ServiceName.ROUTER, SecretRedactor([TOKEN])))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


async def benchmark(args: argparse.Namespace, workdir: Path, mqtt_port: int | None) -> None:
    print(f"HTTP: {args.requests} sequential + {args.requests} concurrent ({args.concurrency})")
    print(f"{'':28}{'p50 ms':>8}{'p99 ms':>8}{'seq req/s':>11}{'conc req/s':>12}")
    for path in ("/health", "/api/info"):
        async with bare_app(free_port()) as url:
            bare = await measure_http(url, path, args.requests, args.concurrency)
        async with kitty_app(free_port(), workdir / "data") as url:
            kitty = await measure_http(url, path, args.requests, args.concurrency)
        for name, result in ((f"bare aiohttp {path}", bare), (f"KITTY scaffold {path}", kitty)):
            print(
                f"{name:28}{result.p50_ms:8.3f}{result.p99_ms:8.3f}"
                f"{result.sequential_rps:11.0f}{result.concurrent_rps:12.0f}"
            )
        print(
            f"{'ratio scaffold/bare':28}{kitty.p50_ms / bare.p50_ms:8.2f}"
            f"{kitty.p99_ms / bare.p99_ms:8.2f}"
            f"{kitty.sequential_rps / bare.sequential_rps:11.2f}"
            f"{kitty.concurrent_rps / bare.concurrent_rps:12.2f}"
        )

    if mqtt_port is None:
        print("MQTT: skipped (no --mqtt-port and no mosquitto binary)")
        return
    raw_rate, link_rate = await measure_mqtt(mqtt_port, args.messages)
    print(f"\nMQTT: {args.messages} QoS 1 messages, publish until all received")
    print(f"{'raw aiomqtt publish':28}{raw_rate:10.0f} msg/s")
    print(f"{'MqttLink.publish_event':28}{link_rate:10.0f} msg/s")
    print(f"{'ratio link/raw':28}{link_rate / raw_rate:10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--mqtt-port", type=int)
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        route_access_logs_to_devnull()
        mqtt_port = args.mqtt_port
        if mqtt_port is None and Path(MOSQUITTO).exists():
            mqtt_port = stack.enter_context(mosquitto(workdir))
        asyncio.run(benchmark(args, workdir, mqtt_port))


if __name__ == "__main__":
    main()
