"""Budgets: spending per UTC day and month, summed from the ledger, blocking paid calls."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from kittyai.contract.routing import BudgetState, BudgetStatus, Tier
from kittyai.router.budgets import BudgetGuard, period_start
from kittyai.router.ledger import DecisionLedger
from kittyai.router.options import BudgetOptions
from tests.lib.router.decisions import NOW, make_decision

GLOBAL_DAILY_USED_UP = (
    "The cloud budget for today is used up, so this answer comes from the local model."
)


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[DecisionLedger]:
    ledger = await DecisionLedger.open(tmp_path / "decisions.sqlite3")
    yield ledger
    await ledger.close()


async def spend(
    ledger: DecisionLedger, usd: float, *, backend: str = "openai", at: datetime = NOW
) -> None:
    await ledger.record(make_decision(Tier.CLOUD, at=at, backend=backend, cost_usd=usd))


def test_periods_start_at_utc_midnight_and_the_first_of_the_month() -> None:
    assert period_start("daily", NOW) == datetime(2026, 3, 15, tzinfo=UTC)
    assert period_start("monthly", NOW) == datetime(2026, 3, 1, tzinfo=UTC)
    # Half past midnight in Berlin on April 1st is still March 31st in UTC.
    berlin = datetime(2026, 4, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    assert period_start("daily", berlin) == datetime(2026, 3, 31, tzinfo=UTC)
    assert period_start("monthly", berlin) == datetime(2026, 3, 1, tzinfo=UTC)


async def test_yesterday_and_last_month_do_not_count(ledger: DecisionLedger) -> None:
    guard = BudgetGuard(
        ledger,
        [
            BudgetOptions(period="daily", hard_usd=10.0),
            BudgetOptions(period="monthly", hard_usd=100.0),
        ],
    )
    today = period_start("daily", NOW)
    month = period_start("monthly", NOW)
    await spend(ledger, 1.0, at=month - timedelta(microseconds=1))  # last month
    await spend(ledger, 2.0, at=month)  # this month, not today
    await spend(ledger, 4.0, at=today - timedelta(microseconds=1))  # yesterday
    await spend(ledger, 8.0, at=today)  # today

    daily, monthly = await guard.statuses(NOW)
    assert daily.spent_usd == pytest.approx(8.0)
    assert monthly.spent_usd == pytest.approx(14.0)
    # On the first of the next month, both start again.
    next_month = datetime(2026, 4, 1, 0, 0, 1, tzinfo=UTC)
    assert [s.spent_usd for s in await guard.statuses(next_month)] == [0.0, 0.0]


async def test_states_follow_the_soft_and_hard_limits(ledger: DecisionLedger) -> None:
    guard = BudgetGuard(ledger, [BudgetOptions(period="daily", soft_usd=1.0, hard_usd=2.0)])

    async def status() -> BudgetStatus:
        (only,) = await guard.statuses(NOW)
        return only

    assert await status() == BudgetStatus(
        scope="global",
        period="daily",
        spent_usd=0.0,
        soft_usd=1.0,
        hard_usd=2.0,
        left_usd=2.0,
        state=BudgetState.OK,
    )
    await spend(ledger, 0.5)
    assert (await status()).state is BudgetState.OK
    await spend(ledger, 0.5)
    assert (await status()).state is BudgetState.SOFT
    assert (await status()).left_usd == pytest.approx(1.0)
    assert not (await guard.check("openai", NOW)).blocked
    await spend(ledger, 1.0)
    assert (await status()).state is BudgetState.HARD
    assert (await status()).left_usd == 0.0
    await spend(ledger, 0.75)
    assert (await status()).left_usd == 0.0
    assert (await status()).spent_usd == pytest.approx(2.75)


async def test_a_backend_budget_blocks_only_that_backend(ledger: DecisionLedger) -> None:
    guard = BudgetGuard(ledger, [BudgetOptions(scope="openai", period="monthly", hard_usd=1.0)])
    await spend(ledger, 1.0, backend="openai")

    verdict = await guard.check("openai", NOW)
    assert verdict.blocked
    assert [s.scope for s in verdict.exceeded] == ["openai"]
    assert verdict.notice == (
        "The budget for openai for this month is used up,"
        " so this answer comes from the local model."
    )
    anthropic = await guard.check("anthropic", NOW)
    assert not anthropic.blocked
    assert anthropic.exceeded == ()
    assert anthropic.notice is None


async def test_a_global_budget_blocks_every_backend(ledger: DecisionLedger) -> None:
    guard = BudgetGuard(
        ledger,
        [
            BudgetOptions(period="daily", hard_usd=1.0),
            BudgetOptions(scope="openai", period="daily", hard_usd=5.0),
        ],
    )
    await spend(ledger, 0.6, backend="openai")
    await spend(ledger, 0.4, backend="perplexity")

    for backend in ("openai", "anthropic", "perplexity"):
        verdict = await guard.check(backend, NOW)
        assert verdict.blocked
        assert [s.scope for s in verdict.exceeded] == ["global"]
        assert verdict.notice == GLOBAL_DAILY_USED_UP
    # Tomorrow the daily budget is fresh again.
    assert not (await guard.check("openai", NOW + timedelta(days=1))).blocked


async def test_soft_limits_never_block(ledger: DecisionLedger) -> None:
    guard = BudgetGuard(ledger, [BudgetOptions(period="daily", soft_usd=0.1)])
    await spend(ledger, 3.0)

    assert not (await guard.check("openai", NOW)).blocked
    assert [s.state for s in await guard.statuses(NOW)] == [BudgetState.SOFT]


async def test_spending_survives_a_restart(tmp_path: Path) -> None:
    budgets = [BudgetOptions(period="daily", hard_usd=1.0)]
    ledger = await DecisionLedger.open(tmp_path / "decisions.sqlite3")
    await spend(ledger, 1.0)
    await ledger.close()

    reopened = await DecisionLedger.open(tmp_path / "decisions.sqlite3")
    try:
        verdict = await BudgetGuard(reopened, budgets).check("openai", NOW)
        assert verdict.blocked
        assert verdict.notice == GLOBAL_DAILY_USED_UP
    finally:
        await reopened.close()
