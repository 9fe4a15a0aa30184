"""What one turn of a KITTY agent did, for whoever asked for the turn."""

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from homeassistant.exceptions import HomeAssistantError

from kittyai.contract.routing import RoutingDecision


@dataclass(slots=True)
class KittyTurn:
    """What one turn of a KITTY agent did: the router's decisions, or its error."""

    decisions: list[RoutingDecision] = field(default_factory=list)
    error: HomeAssistantError | None = None

    def route(self) -> dict[str, Any] | None:
        """Return where the turn was answered and what all its model calls cost.

        The tier, backend and reason are those of the final answer; a turn with tool
        calls asked the router several times, and its cost and latency add up.
        None when the router recorded nothing (it could not be reached).
        """
        if not self.decisions:
            return None
        final = self.decisions[-1]
        return {
            "tier": final.tier.value,
            "backend": final.backend,
            "model": final.model,
            "reason": final.reason.value,
            "confidence": final.confidence,
            "cost_usd": sum(decision.cost_usd for decision in self.decisions),
            "latency_ms": sum(decision.latency_ms for decision in self.decisions),
        }


# The turn the caller of a conversation wants to hear about: `kitty.ask` sets it around
# `conversation.async_converse`, which runs the agent in the caller's context.
current_turn: ContextVar[KittyTurn | None] = ContextVar("kitty_current_turn", default=None)
