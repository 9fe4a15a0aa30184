"""What routing a turn through KITTY's router adds to calling the model server directly.

A fake OpenAI-compatible model server (its own process, a fixed answer with token
logprobs) is called two ways, interleaved so both see the same machine noise:

- direct: `POST /v1/chat/completions` on the fake;
- routed: the same request to a real router process (`python -m kittyai.router`,
  info logs as in production) whose one local backend is the fake. The router
  scores the answer's confidence, records the decision durably in SQLite,
  publishes nothing (no broker) and answers.

Profiles: `kitty-local` (local tier, confidence gate, exact cache) and `kitty-auto`
with the semantic cache off (adds freshness detection and the escalation check). The
semantic cache's own cost, MiniLM embedding of the question, is measured by
`benchmarks/semantic_cache.py`.

Goal from the router issue: p50 under 3 ms and p99 under 10 ms added. LiteLLM
documents 2-12 ms median overhead for its proxy.

    python benchmarks/router_overhead.py [--requests 1000]
"""

import argparse
import asyncio
from collections.abc import Iterator
import contextlib
import json
import multiprocessing
import os
from pathlib import Path
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import aiohttp
from aiohttp import web

TOKEN = "benchmark-token-0123456789"  # noqa: S105
ANSWER = "Dry PETG at 65 degrees for four hours."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _completion() -> dict[str, object]:
    tokens = ANSWER.split(" ")
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": "fake-local",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER},
                "finish_reason": "stop",
                "logprobs": {
                    "content": [
                        {
                            "token": token,
                            "logprob": -0.01,
                            "top_logprobs": [
                                {"token": token, "logprob": -0.01},
                                {"token": "x", "logprob": -5.0},
                            ],
                        }
                        for token in tokens
                    ]
                },
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": len(tokens), "total_tokens": 29},
    }


def serve_fake(port: int) -> None:
    """Run the fake model server until killed (in its own process)."""
    body = json.dumps(_completion())

    async def chat(_request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="application/json")

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def wait_until_up(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url, timeout=1),  # noqa: S310 - loopback only
        ):
            return
        time.sleep(0.1)
    raise TimeoutError(url)


@contextlib.contextmanager
def router_process(workdir: Path, fake_url: str, *, semantic: bool) -> Iterator[str]:
    port = free_port()
    options = {
        "log_level": "info",
        "bind": "127.0.0.1",
        "port": port,
        "api_token": TOKEN,
        "backends": [
            {"name": "local", "kind": "openai_compatible", "url": fake_url, "model": "fake"}
        ],
        "cache": {"semantic": semantic},
    }
    options_path = workdir / f"options-{port}.json"
    options_path.write_text(json.dumps(options), encoding="utf-8")
    with (workdir / f"router-{port}.log").open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kittyai.router",
                "--options",
                str(options_path),
                "--data",
                str(workdir / f"data-{port}"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=15)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(fake_url: str, router_url: str, profile: str, requests: int) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    direct: list[float] = []
    routed: list[float] = []
    async with aiohttp.ClientSession() as session:

        async def call(url: str, body: dict[str, object], sink: list[float] | None) -> None:
            started = time.perf_counter()
            async with session.post(url, json=body, headers=headers) as response:
                payload = await response.json()
            if sink is not None:
                sink.append((time.perf_counter() - started) * 1000)
            assert response.status == 200, payload

        for index in range(requests + 50):
            # A new question each time: the exact cache never answers.
            body = {
                "model": profile,
                "messages": [{"role": "user", "content": f"How long to dry PETG, take {index}?"}],
            }
            warm = index >= 50
            await call(f"{fake_url}/chat/completions", body, direct if warm else None)
            await call(f"{router_url}/v1/chat/completions", body, routed if warm else None)

    p50 = percentile(routed, 0.5) - percentile(direct, 0.5)
    p99 = percentile(routed, 0.99) - percentile(direct, 0.99)
    print(f"\n{profile} ({requests} sequential requests each, interleaved)")
    print(
        f"  direct to the model server  p50 {percentile(direct, 0.5):7.2f} ms"
        f"  p99 {percentile(direct, 0.99):7.2f} ms  mean {statistics.fmean(direct):7.2f} ms"
    )
    print(
        f"  through the router          p50 {percentile(routed, 0.5):7.2f} ms"
        f"  p99 {percentile(routed, 0.99):7.2f} ms  mean {statistics.fmean(routed):7.2f} ms"
    )
    print(
        f"  added by the router         p50 {p50:7.2f} ms  p99 {p99:7.2f} ms"
        f"  ratio routed/direct p50 {percentile(routed, 0.5) / percentile(direct, 0.5):.2f}"
    )
    print(
        f"  goal p50 < 3 ms: {'met' if p50 < 3 else 'NOT met'};"
        f" goal p99 < 10 ms: {'met' if p99 < 10 else 'NOT met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    fake_port = free_port()
    fake = multiprocessing.get_context("spawn").Process(target=serve_fake, args=(fake_port,))
    fake.start()
    fake_url = f"http://127.0.0.1:{fake_port}/v1"
    try:
        wait_until_up(f"http://127.0.0.1:{fake_port}/health")
        print(f"router overhead benchmark, {os.cpu_count()} CPUs")
        with (
            tempfile.TemporaryDirectory() as workdir,
            router_process(Path(workdir), fake_url, semantic=False) as router_url,
        ):
            for profile in ("kitty-local", "kitty-auto"):
                asyncio.run(measure(fake_url, router_url, profile, args.requests))
    finally:
        fake.terminate()
        fake.join()


if __name__ == "__main__":
    main()
