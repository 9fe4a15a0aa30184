"""Conversation memory: what KITTY remembers once Home Assistant's chat session ended.

Home Assistant keeps a conversation's chat log for 5 minutes of silence. KITTY keeps
the last few exchanges of each conversation for a day, on disk, so a conversation
that comes back later (by its id, or from the same satellite or user) continues
where it left off. Exchanges are kept short: they remind the model, they are no log.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Self, TypedDict

from homeassistant.components.conversation import ConversationInput
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.storage import Store
from homeassistant.util import dt as dt_util

from .const import DOMAIN

STORAGE_VERSION: Final = 1
# Seconds to gather the writes of a burst of turns into one.
SAVE_DELAY: Final = 10
MAX_EXCHANGES: Final = 4
# Characters kept of each side of an exchange.
MAX_TEXT: Final = 600
RETENTION: Final = timedelta(days=1)


class _StoredExchange(TypedDict):
    user: str
    assistant: str
    at: str


class _StoredThread(TypedDict):
    updated: str
    exchanges: list[_StoredExchange]


class _StoredMemory(TypedDict):
    threads: dict[str, _StoredThread]
    latest: dict[str, str]


@dataclass(frozen=True, slots=True)
class Exchange:
    """One turn: what the user said and what KITTY answered."""

    user: str
    assistant: str
    at: datetime = field(default_factory=dt_util.utcnow)


@dataclass(slots=True)
class _Thread:
    updated: datetime
    exchanges: list[Exchange]


@dataclass(frozen=True, slots=True)
class Speaker:
    """Whom a conversation is with: how a new session from them is recognised."""

    device_id: str | None
    user_id: str | None

    @classmethod
    def of(cls, user_input: ConversationInput) -> Self:
        """Return who spoke: the satellite's device, and the user behind the request."""
        return cls(
            device_id=user_input.device_id or user_input.satellite_id,
            user_id=user_input.context.user_id,
        )

    @property
    def keys(self) -> list[str]:
        """Return the keys of this speaker; a device names a place, so it comes first."""
        keys = []
        if self.device_id:
            keys.append(f"device:{self.device_id}")
        if self.user_id:
            keys.append(f"user:{self.user_id}")
        return keys


def memory_prompt(exchanges: Iterable[Exchange]) -> str:
    """Return the system context that reminds the model of earlier exchanges."""
    lines = [
        "Earlier in this conversation (recalled from memory, oldest first). "
        "Use it only as context for what the user says now:"
    ]
    for exchange in exchanges:
        lines.append(f"User: {exchange.user}")
        lines.append(f"Assistant: {exchange.assistant}")
    return "\n".join(lines)


class ConversationMemory:
    """The recent exchanges of one KITTY entry's conversations, kept in `.storage`."""

    def __init__(self, store: Store[_StoredMemory], stored: _StoredMemory | None) -> None:
        """Start from what `store` held."""
        self._store = store
        # Whether a remembered exchange still waits for its write.
        self._unsaved = False
        self._threads: dict[str, _Thread] = {}
        self._latest: dict[str, str] = {}
        if stored is not None:
            self._threads = {
                conversation_id: _Thread(
                    updated=datetime.fromisoformat(thread["updated"]),
                    exchanges=[
                        Exchange(
                            item["user"], item["assistant"], datetime.fromisoformat(item["at"])
                        )
                        for item in thread["exchanges"]
                    ],
                )
                for conversation_id, thread in stored["threads"].items()
            }
            self._latest = dict(stored["latest"])
        self._forget_stale()

    @classmethod
    async def async_load(cls, hass: HomeAssistant, entry_id: str) -> Self:
        """Return the memory of the entry `entry_id`, as it was last saved."""
        store = _store(hass, entry_id)
        return cls(store, await store.async_load())

    @staticmethod
    async def async_remove(hass: HomeAssistant, entry_id: str) -> None:
        """Delete the memory of a removed entry."""
        await _store(hass, entry_id).async_remove()

    def recall(self, conversation_id: str | None, speaker: Speaker) -> list[Exchange]:
        """Return the exchanges of this conversation, else of the speaker's latest one."""
        candidates = [conversation_id] + [self._latest.get(key) for key in speaker.keys]
        cutoff = dt_util.utcnow() - RETENTION
        for candidate in candidates:
            if candidate and (thread := self._threads.get(candidate)) and thread.updated > cutoff:
                return list(thread.exchanges)
        return []

    @callback
    def remember(
        self,
        conversation_id: str,
        speaker: Speaker,
        exchange: Exchange,
        *,
        earlier: list[Exchange],
    ) -> None:
        """Add an exchange to a conversation; a new one continues from `earlier`."""
        exchange = Exchange(exchange.user[:MAX_TEXT], exchange.assistant[:MAX_TEXT], exchange.at)
        thread = self._threads.setdefault(conversation_id, _Thread(exchange.at, list(earlier)))
        thread.exchanges = [*thread.exchanges, exchange][-MAX_EXCHANGES:]
        thread.updated = exchange.at
        for key in speaker.keys:
            self._latest[key] = conversation_id
        self._unsaved = True
        self._store.async_delay_save(self._data_to_save, SAVE_DELAY)

    async def async_flush(self) -> None:
        """Write what is still waiting for its delayed save."""
        if self._unsaved:
            await self._store.async_save(self._data_to_save())

    def _forget_stale(self) -> None:
        """Drop conversations older than the retention, and who pointed to them."""
        cutoff = dt_util.utcnow() - RETENTION
        self._threads = {
            conversation_id: thread
            for conversation_id, thread in self._threads.items()
            if thread.updated > cutoff
        }
        self._latest = {
            key: conversation_id
            for key, conversation_id in self._latest.items()
            if conversation_id in self._threads
        }

    @callback
    def _data_to_save(self) -> _StoredMemory:
        self._unsaved = False
        self._forget_stale()
        return {
            "threads": {
                conversation_id: {
                    "updated": thread.updated.isoformat(),
                    "exchanges": [
                        {"user": item.user, "assistant": item.assistant, "at": item.at.isoformat()}
                        for item in thread.exchanges
                    ],
                }
                for conversation_id, thread in self._threads.items()
            },
            "latest": dict(self._latest),
        }


def _store(hass: HomeAssistant, entry_id: str) -> Store[_StoredMemory]:
    return Store(hass, STORAGE_VERSION, f"{DOMAIN}.{entry_id}.memory", private=True)
