"""Repair issues for budgets the router enforces: one per hard limit that is reached."""

from collections.abc import Iterable

from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir

from kittyai.contract.routing import BudgetState, BudgetStatus

from .const import DOMAIN

BUDGETS_URL = "https://github.com/kitty-brain/kitty#budgets"


def budget_issue_id(budget: BudgetStatus) -> str:
    """Return the issue id of a budget: one issue per scope and period."""
    return f"budget_exhausted_{budget.scope}_{budget.period}"


def _usd(amount: float | None) -> str:
    """Format an amount of USD for an issue's text; the contract allows a missing limit."""
    return "?" if amount is None else f"{amount:.2f}"


class BudgetIssues:
    """Keeps one repair issue per budget whose hard limit blocks the cloud."""

    def __init__(self, hass: HomeAssistant) -> None:
        """Start with no issue raised."""
        self._hass = hass
        self._raised: set[str] = set()

    @callback
    def async_update(self, budgets: Iterable[BudgetStatus]) -> None:
        """Raise (or refresh) the issue of every hard budget and remove the others."""
        hard = {
            budget_issue_id(budget): budget
            for budget in budgets
            if budget.state is BudgetState.HARD
        }
        for issue_id, budget in hard.items():
            ir.async_create_issue(
                self._hass,
                DOMAIN,
                issue_id,
                is_fixable=False,
                severity=ir.IssueSeverity.WARNING,
                translation_key="budget_exhausted",
                translation_placeholders={
                    "scope": budget.scope,
                    "period": budget.period,
                    "spent": _usd(budget.spent_usd),
                    "limit": _usd(budget.hard_usd),
                },
                learn_more_url=BUDGETS_URL,
            )
        for issue_id in self._raised - hard.keys():
            ir.async_delete_issue(self._hass, DOMAIN, issue_id)
        self._raised = set(hard)

    @callback
    def async_clear(self) -> None:
        """Remove every issue raised: without the entry nothing keeps them current."""
        self.async_update(())
