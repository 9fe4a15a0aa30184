"""`app_update` and the Supervisor calls it makes, against a protocol-faithful Supervisor."""

from dataclasses import replace
import json
from pathlib import Path

import aiohttp
import pytest

from kittyai.catalog import ServiceName
from kittyai.contract.orchestrator import RunErrorCode
from kittyai.orchestrator.engine import RunError
from kittyai.orchestrator.options import AppUpdatePolicy, Policies
from kittyai.orchestrator.templates.app_update import AppUpdateParams, AppUpdateTemplate
from kittyai.orchestrator.templates.base import Peers
from kittyai.supervisor import AppRunState, AppState, SupervisorClient, SupervisorError
from tests.helpers.orchestrator import (
    artifact_text,
    create_run,
    peers_with,
    step_states,
    wait_until_settled,
)
from tests.helpers.services import ServiceApi
from tests.lib.conftest import StartService
from tests.lib.fake_supervisor import Failure, FakeApp, FakeSupervisor

ESPHOME = "5c53de3b_esphome"


@pytest.fixture
def esphome(fake_supervisor: FakeSupervisor) -> FakeApp:
    return fake_supervisor.add_app(
        FakeApp(
            slug=ESPHOME,
            name="ESPHome Device Builder",
            version="2026.9.1",
            version_latest="2026.10.0",
        )
    )


@pytest.fixture
def supervisor(session: aiohttp.ClientSession, fake_supervisor: FakeSupervisor) -> SupervisorClient:
    return SupervisorClient(session, fake_supervisor.token, fake_supervisor.url)


@pytest.fixture
def app_peers(
    session: aiohttp.ClientSession, supervisor: SupervisorClient, esphome: FakeApp, tmp_path: Path
) -> Peers:
    """What `app_update` plans with: the Supervisor with ESPHome on it, no Home Assistant."""
    return peers_with(session, tmp_path, supervisor=supervisor)


# --------------------------------------------------------------------------- the Supervisor client


async def test_an_apps_state_and_versions(supervisor: SupervisorClient, esphome: FakeApp) -> None:
    assert await supervisor.get_app_info(ESPHOME) == AppState(
        name="ESPHome Device Builder",
        slug=ESPHOME,
        state=AppRunState.STARTED,
        version="2026.9.1",
        version_latest="2026.10.0",
        update_available=True,
    )


async def test_an_update_brings_the_latest_version(
    supervisor: SupervisorClient, fake_supervisor: FakeSupervisor, esphome: FakeApp
) -> None:
    await supervisor.update_app(ESPHOME)

    app = await supervisor.get_app_info(ESPHOME)
    assert (app.version, app.update_available) == ("2026.10.0", False)
    # The v1 store path, not the deprecated /addons/<slug>/update.
    assert f"POST /store/addons/{ESPHOME}/update" in fake_supervisor.calls


async def test_a_partial_backup_restores_the_old_version(
    supervisor: SupervisorClient, fake_supervisor: FakeSupervisor, esphome: FakeApp
) -> None:
    slug = await supervisor.partial_backup("before the update", [ESPHOME])
    await supervisor.update_app(ESPHOME)

    backup = await supervisor.backup_info(slug)
    await supervisor.restore_partial_backup(slug, [ESPHOME])

    assert backup.name == "before the update"
    assert [(app.slug, app.version) for app in backup.addons] == [(ESPHOME, "2026.9.1")]
    assert (await supervisor.get_app_info(ESPHOME)).version == "2026.9.1"
    assert fake_supervisor.restores == [(slug, [ESPHOME])]


async def test_a_restart_brings_a_stopped_app_up(
    supervisor: SupervisorClient, esphome: FakeApp
) -> None:
    esphome.state = "stopped"

    await supervisor.restart_app(ESPHOME)

    assert (await supervisor.get_app_info(ESPHOME)).state is AppRunState.STARTED


async def test_the_supervisors_refusals_keep_its_message(
    supervisor: SupervisorClient, esphome: FakeApp
) -> None:
    esphome.refuse_update = "Can't update: not enough free space"

    with pytest.raises(SupervisorError, match="HTTP 404: Addon nowhere does not exist") as unknown:
        await supervisor.get_app_info("nowhere")
    with pytest.raises(SupervisorError, match="HTTP 400: Can't update: not enough free space"):
        await supervisor.update_app(ESPHOME)

    assert unknown.value.status == 404


async def test_a_role_too_small_is_explained(
    supervisor: SupervisorClient, fake_supervisor: FakeSupervisor, esphome: FakeApp
) -> None:
    fake_supervisor.role = "backup"

    await supervisor.partial_backup("allowed", [ESPHOME])
    with pytest.raises(SupervisorError, match=r"HTTP 403\): the app's role does not allow it"):
        await supervisor.update_app(ESPHOME)

    assert esphome.version == "2026.9.1"


# --------------------------------------------------------------------------- planning


async def test_the_plan_backs_up_updates_restarts_and_verifies(app_peers: Peers) -> None:
    params = AppUpdateParams(app=ESPHOME, health_url="http://127.0.0.1:6052/")

    steps = await AppUpdateTemplate().plan(params, app_peers)

    assert [(step.name, step.kind, step.compensation) for step in steps] == [
        ("backup", "supervisor.backup", None),
        ("update", "supervisor.update", "supervisor.restore"),
        ("restart", "supervisor.restart", None),
        ("verify", "app.verify", None),
    ]
    assert steps[1].title == "Update ESPHome Device Builder from 2026.9.1 to 2026.10.0"
    assert all(step.approval is None for step in steps)
    assert steps[3].params["version"] == "2026.10.0"


async def test_a_protected_app_waits_for_a_human_before_the_update(app_peers: Peers) -> None:
    policies = Policies(app_update=AppUpdatePolicy(protected_apps=["*_esphome"]))

    steps = await AppUpdateTemplate().plan(
        AppUpdateParams(app=ESPHOME), replace(app_peers, policies=policies)
    )

    gates = {step.name: step.approval for step in steps if step.approval is not None}
    assert list(gates) == ["update"]
    assert gates["update"].reason == (
        f"ESPHome Device Builder ({ESPHOME}) is protected: update it from 2026.9.1 to 2026.10.0?"
    )


@pytest.mark.parametrize(
    ("params", "code", "message"),
    [
        pytest.param(
            AppUpdateParams(app="nowhere"),
            RunErrorCode.INVALID_PARAMS,
            "The Supervisor knows no app nowhere: .*does not exist",
            id="unknown-app",
        ),
        pytest.param(
            AppUpdateParams(app=ESPHOME, health_url="http://8.8.8.8/health"),
            RunErrorCode.INVALID_PARAMS,
            "health_url: 8.8.8.8 is at 8.8.8.8, outside the local network",
            id="health-url-off-the-lan",
        ),
        pytest.param(
            AppUpdateParams(app=ESPHOME, health_entity="sensor.esphome", health_state="on"),
            RunErrorCode.TEMPLATE_UNAVAILABLE,
            "health_entity needs Home Assistant",
            id="entity-without-home-assistant",
        ),
    ],
)
async def test_plans_that_cannot_work_are_refused(
    app_peers: Peers, params: AppUpdateParams, code: RunErrorCode, message: str
) -> None:
    with pytest.raises(RunError, match=message) as refused:
        await AppUpdateTemplate().plan(params, app_peers)

    assert refused.value.code is code


async def test_an_app_at_its_latest_version_is_not_updated(
    app_peers: Peers, esphome: FakeApp
) -> None:
    esphome.version = esphome.version_latest

    with pytest.raises(
        RunError, match=r"ESPHome Device Builder .* is already at 2026\.10\.0"
    ) as refused:
        await AppUpdateTemplate().plan(AppUpdateParams(app=ESPHOME), app_peers)

    assert refused.value.code is RunErrorCode.INVALID_PARAMS


async def test_without_the_supervisor_the_template_is_unavailable(app_peers: Peers) -> None:
    with pytest.raises(RunError, match="needs the Supervisor") as refused:
        await AppUpdateTemplate().plan(
            AppUpdateParams(app=ESPHOME), replace(app_peers, supervisor=None)
        )

    assert refused.value.code is RunErrorCode.TEMPLATE_UNAVAILABLE


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"app": "Not A Slug"}, "app"),
        ({"app": ESPHOME, "health_url": "ftp://nas/health"}, r"must be an http\(s\) URL"),
        ({"app": ESPHOME, "health_url": "http://admin:pw@nas/health"}, "user name or password"),
        ({"app": ESPHOME, "health_entity": "sensor.esphome"}, "together"),
    ],
)
def test_bad_parameters_are_refused(params: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        AppUpdateParams.model_validate(params)


# --------------------------------------------------------------------------- runs in the service


def supervisor_env(supervisor: FakeSupervisor) -> dict[str, str]:
    """The environment the Supervisor gives an app container."""
    return {"SUPERVISOR_TOKEN": supervisor.token, "SUPERVISOR_URL": supervisor.url}


@pytest.fixture
async def orchestrator(
    start_service: StartService, fake_supervisor: FakeSupervisor, session: aiohttp.ClientSession
) -> ServiceApi:
    """Run the real orchestrator process as an app: under the (fake) Supervisor."""
    process = await start_service(
        ServiceName.ORCHESTRATOR,
        mqtt=False,
        env=supervisor_env(fake_supervisor),
        # A broken app is given little time to come up, so rollbacks come quickly.
        extra_options={"app_update": {"health_timeout_s": 2, "protected_apps": ["core_*"]}},
    )
    return ServiceApi(process, session)


@pytest.mark.parametrize("failure", [Failure.UNHEALTHY, Failure.ERROR])
async def test_an_app_that_fails_after_its_update_is_restored_from_its_backup(
    orchestrator: ServiceApi, fake_supervisor: FakeSupervisor, esphome: FakeApp, failure: Failure
) -> None:
    esphome.fails_after_update = failure

    created = await create_run(
        orchestrator, "app_update", app=ESPHOME, health_url=fake_supervisor.health_url(ESPHOME)
    )
    run = await wait_until_settled(orchestrator, created["id"])

    assert run["state"] == "rolled_back"
    assert step_states(run) == {
        "backup": "succeeded",
        "update": "compensated",
        "restart": "succeeded",
        "verify": "failed",
    }
    [backup] = fake_supervisor.backups.values()
    assert fake_supervisor.restores == [(backup.slug, [ESPHOME])]
    assert (esphome.version, esphome.state) == ("2026.9.1", "started")
    verify = run["steps"][3]
    seen = (
        "answered HTTP 500" if failure is Failure.UNHEALTHY else "ESPHome Device Builder is error"
    )
    assert seen in verify["message"]
    rollback = await artifact_text(orchestrator, run, "rollback_log")
    assert "update: undone by supervisor.restore" in rollback
    assert fake_supervisor.token not in orchestrator.process.log()
    assert json.loads(await artifact_text(orchestrator, run, "backup")) == {
        "slug": backup.slug,
        "app": ESPHOME,
        "version": "2026.9.1",
    }


async def test_an_app_that_works_after_its_update_keeps_the_new_version(
    orchestrator: ServiceApi, fake_supervisor: FakeSupervisor, esphome: FakeApp
) -> None:
    created = await create_run(
        orchestrator, "app_update", app=ESPHOME, health_url=fake_supervisor.health_url(ESPHOME)
    )
    run = await wait_until_settled(orchestrator, created["id"])

    assert run["state"] == "succeeded", run
    assert esphome.version == "2026.10.0"
    assert fake_supervisor.restores == []
    assert run["steps"][3]["result"] == {
        "state": "started",
        "version": "2026.10.0",
        "health_status": 200,
    }
    assert len(fake_supervisor.backups) == 1


async def test_a_protected_app_is_updated_only_after_approval(
    orchestrator: ServiceApi, fake_supervisor: FakeSupervisor
) -> None:
    mosquitto = fake_supervisor.add_app(
        FakeApp(
            slug="core_mosquitto", name="Mosquitto broker", version="6.5.1", version_latest="6.5.2"
        )
    )

    created = await create_run(orchestrator, "app_update", app="core_mosquitto")
    waiting = await wait_until_settled(orchestrator, created["id"])

    assert waiting["state"] == "awaiting_approval"
    assert waiting["awaiting_step"] == 1
    assert step_states(waiting)["backup"] == "succeeded"
    assert "POST /store/addons/core_mosquitto/update" not in fake_supervisor.calls
    assert mosquitto.version == "6.5.1"

    answer = await orchestrator.call(
        "POST",
        f"/api/runs/{created['id']}/approvals",
        json_body={"decision": "approve", "approver": "ada", "reason": "maintenance window"},
    )
    assert answer.status == 200, answer.body
    run = await wait_until_settled(orchestrator, created["id"])

    assert run["state"] == "succeeded"
    assert mosquitto.version == "6.5.2"
    assert run["approvals"][0]["approver"] == "ada"


async def test_an_update_the_supervisor_refuses_changes_nothing(
    orchestrator: ServiceApi, fake_supervisor: FakeSupervisor, esphome: FakeApp
) -> None:
    esphome.refuse_update = "Not enough free space on the data disk"

    created = await create_run(orchestrator, "app_update", app=ESPHOME)
    run = await wait_until_settled(orchestrator, created["id"])

    assert run["state"] == "failed"
    assert "Not enough free space on the data disk" in run["steps"][1]["message"]
    assert fake_supervisor.restores == []
    assert esphome.version == "2026.9.1"
    assert "Nothing needed undoing" in await artifact_text(orchestrator, run, "rollback_log")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"app": "nowhere"}, "The Supervisor knows no app nowhere"),
        ({"app": "core_mosquitto"}, "already at 6.5.2"),
        ({"app": ESPHOME, "health_url": "http://8.8.8.8/"}, "outside the local network"),
    ],
)
async def test_runs_that_cannot_work_are_refused_and_nothing_is_stored(
    orchestrator: ServiceApi,
    fake_supervisor: FakeSupervisor,
    esphome: FakeApp,
    params: dict[str, str],
    message: str,
) -> None:
    fake_supervisor.add_app(
        FakeApp(
            slug="core_mosquitto", name="Mosquitto broker", version="6.5.2", version_latest="6.5.2"
        )
    )

    answer = await orchestrator.call(
        "POST", "/api/runs", json_body={"template": "app_update", "params": params}
    )

    assert answer.status == 422
    assert answer.code == "invalid_params"
    assert message in answer.body["error"]["message"]
    assert (await orchestrator.get("/api/runs"))["total"] == 0
    assert fake_supervisor.backups == {}
