"""A real router process over protocol-faithful fake model servers."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kittyai.catalog import ServiceName
from kittyai.contract.routing import RoutingDecision
from tests.helpers.broker import MosquittoBroker
from tests.helpers.fake_llm import FakeAnthropic, FakeOllama, FakeOpenAI
from tests.helpers.services import ServiceProcess

OPENAI_KEY = "sk-openai-secret-0001"
ANTHROPIC_KEY = "sk-ant-secret-0002"
PERPLEXITY_KEY = "pplx-secret-0003"
# USD per million tokens.
OPENAI_PRICE = {"price_input": 0.25, "price_cached_input": 0.025, "price_output": 2.0}
ANTHROPIC_PRICE = {
    "price_input": 3.0,
    "price_cached_input": 0.3,
    "price_cache_write": 3.75,
    "price_output": 15.0,
}
PERPLEXITY_PRICE = {"price_input": 1.0, "price_output": 1.0, "price_per_request": 0.005}


@dataclass(slots=True)
class ChatResult:
    """What a client of the router saw."""

    status: int
    headers: dict[str, str]
    body: dict[str, Any]
    # The parsed `data:` events of a stream; empty for a whole answer.
    chunks: list[dict[str, Any]]

    @property
    def decision(self) -> RoutingDecision:
        """Return the routing decision the answer carries."""
        source = self.chunks[-1] if self.chunks else self.body
        return RoutingDecision.model_validate(source["kitty"])

    @property
    def text(self) -> str:
        """Return the answer's text, whole or streamed."""
        if self.chunks:
            return "".join(
                choice["delta"].get("content") or ""
                for chunk in self.chunks
                for choice in chunk.get("choices", [])
            )
        return self.body["choices"][0]["message"]["content"] or ""


@dataclass(slots=True)
class RouterStack:
    """A router and the fake model servers behind it."""

    router: ServiceProcess
    ollama: FakeOllama
    openai: FakeOpenAI
    anthropic: FakeAnthropic
    perplexity: FakeOpenAI
    session: aiohttp.ClientSession

    @property
    def auth(self) -> dict[str, str]:
        """Return the header the router wants."""
        return {"Authorization": f"Bearer {self.router.token}"}

    async def chat(
        self, text: str | list[dict[str, Any]], *, stream: bool = False, **body: Any
    ) -> ChatResult:
        """Send one chat turn the way an OpenAI client does."""
        messages = [{"role": "user", "content": text}] if isinstance(text, str) else text
        payload = {"model": "kitty-auto", "messages": messages, "stream": stream, **body}
        async with self.session.post(
            f"{self.router.url}/v1/chat/completions", json=payload, headers=self.auth
        ) as response:
            raw = await response.text()
            headers = dict(response.headers)
            if not stream or response.content_type != "text/event-stream":
                return ChatResult(response.status, headers, json.loads(raw), [])
        chunks = [
            json.loads(line.removeprefix("data: "))
            for line in raw.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"
        ]
        return ChatResult(response.status, headers, {}, chunks)

    async def get(self, path: str, **params: Any) -> tuple[int, Any]:
        """GET one of the router's JSON routes."""
        async with self.session.get(
            f"{self.router.url}{path}", params=params, headers=self.auth
        ) as response:
            return response.status, await response.json()

    def cloud_requests(self) -> int:
        """Return how many requests the paid backends received."""
        return (
            len(self.openai.requests) + len(self.anthropic.requests) + len(self.perplexity.requests)
        )


type StartRouter = Callable[..., Awaitable[RouterStack]]


def backends(
    ollama: FakeOllama, openai: FakeOpenAI, anthropic: FakeAnthropic, perplexity: FakeOpenAI
) -> list[dict[str, Any]]:
    """Return router options for one backend of each kind, local first."""
    return [
        {"name": "ollama", "kind": "ollama", "url": ollama.url, "model": "llama3.2"},
        {
            "name": "openai",
            "kind": "openai",
            "url": openai.url,
            "model": "gpt-5-mini",
            "api_key": OPENAI_KEY,
            "max_retries": 1,
            **OPENAI_PRICE,
        },
        {
            "name": "anthropic",
            "kind": "anthropic",
            "url": anthropic.url,
            "model": "claude-sonnet-4-5",
            "api_key": ANTHROPIC_KEY,
            **ANTHROPIC_PRICE,
        },
        {
            "name": "perplexity",
            "kind": "perplexity",
            "url": perplexity.url,
            "model": "sonar",
            "api_key": PERPLEXITY_KEY,
            **PERPLEXITY_PRICE,
        },
    ]


@pytest.fixture
async def start_router(tmp_path: Path, mqtt_broker: MosquittoBroker) -> AsyncIterator[StartRouter]:
    """Start fakes and a router over them; `options` add to or replace router options.

    Starting again in the same test reuses the data dir and the fakes: a restart.
    """
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        fakes: dict[str, Any] = {}
        processes: list[ServiceProcess] = []

        async def start(**options: Any) -> RouterStack:
            if not fakes:
                fakes["ollama"] = await stack.enter_async_context(FakeOllama())
                fakes["openai"] = await stack.enter_async_context(FakeOpenAI(api_key=OPENAI_KEY))
                fakes["anthropic"] = await stack.enter_async_context(
                    FakeAnthropic(api_key=ANTHROPIC_KEY)
                )
                fakes["perplexity"] = await stack.enter_async_context(
                    FakeOpenAI(api_key=PERPLEXITY_KEY, perplexity=True)
                )
            router = ServiceProcess(
                ServiceName.ROUTER,
                tmp_path,
                mqtt_port=mqtt_broker.port,
                extra_options={"backends": backends(**fakes), **options},
            )
            processes.append(router)
            # Off the loop: the fakes this loop serves must stay responsive.
            await asyncio.to_thread(router.start, 60.0)
            return RouterStack(router=router, session=session, **fakes)

        try:
            yield start
        finally:
            for process in processes:
                await asyncio.to_thread(process.stop)
