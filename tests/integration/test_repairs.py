"""A repair issue tells the user when a hard budget keeps KITTY from the cloud."""

from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.translation import async_get_translations
import pytest

from custom_components.kitty.const import DOMAIN
from kittyai.catalog import ServiceName
from kittyai.contract.routing import BudgetState, BudgetStatus
from tests.helpers.services import ServiceProcess
from tests.integration.common import (
    example_router_stats,
    publish_router_stats,
    set_up_kitty,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("mqtt_entry")

GLOBAL_MONTHLY = "budget_exhausted_global_monthly"
OPENAI_DAILY = "budget_exhausted_openai_daily"


def global_monthly(state: BudgetState, spent: float) -> BudgetStatus:
    """Return the global monthly budget of 10 USD, with `spent` of it spent."""
    return BudgetStatus(
        scope="global",
        period="monthly",
        spent_usd=spent,
        soft_usd=8.0,
        hard_usd=10.0,
        left_usd=max(10.0 - spent, 0.0),
        state=state,
    )


def openai_daily(state: BudgetState, spent: float) -> BudgetStatus:
    """Return the daily budget of 1 USD on the `openai` backend."""
    return BudgetStatus(
        scope="openai",
        period="daily",
        spent_usd=spent,
        hard_usd=1.0,
        left_usd=max(1.0 - spent, 0.0),
        state=state,
    )


def kitty_issues(issue_registry: ir.IssueRegistry) -> dict[str, ir.IssueEntry]:
    """Return KITTY's active issues by id."""
    return {
        issue_id: issue
        for (domain, issue_id), issue in issue_registry.issues.items()
        if domain == DOMAIN and issue.active
    }


async def router_reports(hass: HomeAssistant, *budgets: BudgetStatus) -> None:
    """Publish stats with `budgets` and wait until KITTY holds them."""
    stats = example_router_stats(budgets=list(budgets))
    await publish_router_stats(hass, stats)
    coordinator = hass.config_entries.async_entries(DOMAIN)[0].runtime_data.coordinator
    await wait_for(
        hass, lambda: coordinator.data[ServiceName.ROUTER].stats == stats, "the stats to arrive"
    )


async def test_issue_while_a_hard_budget_blocks(
    hass: HomeAssistant, router: ServiceProcess, issue_registry: ir.IssueRegistry
) -> None:
    """A hard budget raises a warning that names it; it goes once the budget is fine again."""
    await set_up_kitty(hass, router)
    await router_reports(hass, global_monthly(BudgetState.SOFT, 8.5))
    assert kitty_issues(issue_registry) == {}

    await router_reports(hass, global_monthly(BudgetState.HARD, 10.02))

    issue = kitty_issues(issue_registry)[GLOBAL_MONTHLY]
    assert issue.severity is ir.IssueSeverity.WARNING
    assert not issue.is_fixable
    assert issue.translation_key == "budget_exhausted"
    assert issue.translation_placeholders == {
        "scope": "global",
        "period": "monthly",
        "spent": "10.02",
        "limit": "10.00",
    }
    assert issue.learn_more_url == "https://github.com/kitty-brain/kitty#budgets"
    # What the user reads in Settings → Repairs.
    texts = await async_get_translations(hass, "en", "issues", [DOMAIN])
    prefix = f"component.{DOMAIN}.issues.budget_exhausted"
    title = texts[f"{prefix}.title"].format(**issue.translation_placeholders)
    description = texts[f"{prefix}.description"].format(**issue.translation_placeholders)
    assert title == "KITTY's monthly global budget is used up"
    assert "spent 10.02 USD of its monthly global budget" in description
    assert "hard limit is 10.00 USD" in description

    # A new month: the budget no longer blocks.
    await router_reports(hass, global_monthly(BudgetState.OK, 0.0))
    assert kitty_issues(issue_registry) == {}


async def test_one_issue_per_budget(
    hass: HomeAssistant, router: ServiceProcess, issue_registry: ir.IssueRegistry
) -> None:
    """Each blocking budget has its own issue, kept current and removed on its own."""
    await set_up_kitty(hass, router)

    await router_reports(
        hass, global_monthly(BudgetState.HARD, 10.0), openai_daily(BudgetState.HARD, 1.0)
    )
    assert set(kitty_issues(issue_registry)) == {GLOBAL_MONTHLY, OPENAI_DAILY}
    assert kitty_issues(issue_registry)[OPENAI_DAILY].translation_placeholders == {
        "scope": "openai",
        "period": "daily",
        "spent": "1.00",
        "limit": "1.00",
    }

    # A call already under way when the limit was hit still costs: the issue follows.
    await router_reports(
        hass, global_monthly(BudgetState.HARD, 10.0), openai_daily(BudgetState.HARD, 1.07)
    )
    assert kitty_issues(issue_registry)[OPENAI_DAILY].translation_placeholders["spent"] == "1.07"

    # The next day the daily budget is fine; the monthly one still blocks.
    await router_reports(
        hass, global_monthly(BudgetState.HARD, 10.0), openai_daily(BudgetState.OK, 0.0)
    )
    assert set(kitty_issues(issue_registry)) == {GLOBAL_MONTHLY}


async def test_issues_follow_the_entry(
    hass: HomeAssistant, router: ServiceProcess, issue_registry: ir.IssueRegistry
) -> None:
    """A reload keeps the issue (the stats are retained); removing KITTY removes it."""
    entry = await set_up_kitty(hass, router)
    await router_reports(hass, global_monthly(BudgetState.HARD, 10.0))

    assert await hass.config_entries.async_reload(entry.entry_id)
    await wait_for(hass, lambda: GLOBAL_MONTHLY in kitty_issues(issue_registry), "the issue")

    assert await hass.config_entries.async_remove(entry.entry_id)
    await hass.async_block_till_done()
    assert kitty_issues(issue_registry) == {}
