"""Adapters from the router's requests to each model server's wire protocol."""

import aiohttp

from kittyai.router.backends.anthropic import AnthropicBackend
from kittyai.router.backends.base import Backend
from kittyai.router.backends.ollama import OllamaBackend
from kittyai.router.backends.openai import OpenAIChatBackend, OpenAIResponsesBackend
from kittyai.router.options import BackendKind, BackendOptions


def create_backend(options: BackendOptions, session: aiohttp.ClientSession) -> Backend:
    """Return the adapter speaking the protocol of `options.kind`, calling through `session`."""
    match options.kind:
        case BackendKind.OLLAMA:
            return OllamaBackend(options, session)
        case BackendKind.ANTHROPIC:
            return AnthropicBackend(options, session)
        case BackendKind.OPENAI if options.api == "responses":
            return OpenAIResponsesBackend(options, session)
        case BackendKind.OPENAI | BackendKind.OPENAI_COMPATIBLE | BackendKind.PERPLEXITY:
            return OpenAIChatBackend(options, session)
