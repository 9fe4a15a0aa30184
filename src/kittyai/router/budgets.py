"""Spending limits on the cloud, read from the decision ledger.

A budget limits what one scope (`global`, or one backend) spends in a calendar day or
month, in UTC. What was spent is summed from the ledger whenever it is asked, so the
budgets need no state of their own and survive restarts with the ledger.

Only calls that cost money are checked: the engine asks `BudgetGuard.check` before a
cloud or search call and never before a local one, so a used-up budget sends turns to
the local model instead of stopping them.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from kittyai.contract.routing import BudgetState, BudgetStatus
from kittyai.router.ledger import DecisionLedger
from kittyai.router.options import BudgetOptions

GLOBAL_SCOPE = "global"
_PERIOD_NAMES = {"daily": "today", "monthly": "this month"}


def period_start(period: Literal["daily", "monthly"], now: datetime) -> datetime:
    """Return when the budget period holding `now` (timezone-aware) began, in UTC."""
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight if period == "daily" else midnight.replace(day=1)


@dataclass(frozen=True, slots=True)
class BudgetVerdict:
    """Whether a paid call may go ahead, and what to tell the user when not."""

    blocked: bool
    # The hard limits that block it.
    exceeded: tuple[BudgetStatus, ...]
    notice: str | None


class BudgetGuard:
    """Tells where spending stands and whether a cloud backend may still be called."""

    def __init__(self, ledger: DecisionLedger, budgets: Sequence[BudgetOptions]) -> None:
        """Guard `budgets`, summing what was spent from `ledger`."""
        self._ledger = ledger
        self._budgets = tuple(budgets)

    async def statuses(self, now: datetime) -> list[BudgetStatus]:
        """Return every configured budget as of `now`, in the order configured."""
        return [await self._status(budget, now) for budget in self._budgets]

    async def check(self, backend: str, now: datetime) -> BudgetVerdict:
        """Return whether a cloud or search call to `backend` is blocked at `now`.

        A hard limit of the global scope or of `backend` blocks once it is reached.
        """
        exceeded: list[BudgetStatus] = []
        for budget in self._budgets:
            if budget.hard_usd is None or budget.scope not in {GLOBAL_SCOPE, backend}:
                continue
            status = await self._status(budget, now)
            if status.state is BudgetState.HARD:
                exceeded.append(status)
        if not exceeded:
            return BudgetVerdict(blocked=False, exceeded=(), notice=None)
        return BudgetVerdict(blocked=True, exceeded=tuple(exceeded), notice=_notice(exceeded[0]))

    async def _status(self, budget: BudgetOptions, now: datetime) -> BudgetStatus:
        spent = await self._ledger.spent(
            since=period_start(budget.period, now),
            backend=None if budget.scope == GLOBAL_SCOPE else budget.scope,
        )
        if budget.hard_usd is not None and spent >= budget.hard_usd:
            state = BudgetState.HARD
        elif budget.soft_usd is not None and spent >= budget.soft_usd:
            state = BudgetState.SOFT
        else:
            state = BudgetState.OK
        return BudgetStatus(
            scope=budget.scope,
            period=budget.period,
            spent_usd=spent,
            soft_usd=budget.soft_usd,
            hard_usd=budget.hard_usd,
            left_usd=None if budget.hard_usd is None else max(budget.hard_usd - spent, 0.0),
            state=state,
        )


def _notice(status: BudgetStatus) -> str:
    """Tell the user, in one sentence, why the local model answers instead."""
    budget = "cloud budget" if status.scope == GLOBAL_SCOPE else f"budget for {status.scope}"
    return (
        f"The {budget} for {_PERIOD_NAMES[status.period]} is used up,"
        " so this answer comes from the local model."
    )
