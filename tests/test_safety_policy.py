"""Policy: what needs a grant, what a grant covers, and decisions taken right before an action."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.config import load_config
from vigil.errors import ConfigError
from vigil.plan.models import Plan
from vigil.safety.errors import GrantRequired
from vigil.safety.grants import create_grant, revoke_grant
from vigil.safety.keys import init_key
from vigil.safety.policy import (
    PolicyConfig,
    Requirement,
    authorize,
    check_plan,
    require_plan,
    requirements,
)

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
STRICT = PolicyConfig()


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIGIL_CONFIG_DIR", str(tmp_path / "config"))
    init_key()


def _plan(tasks: list[dict[str, Any]], phase_env: str | None = None) -> Plan:
    phase: dict[str, Any] = {"id": "main", "tasks": tasks}
    if phase_env:
        phase["environment"] = phase_env
    return Plan.model_validate({"name": "release", "project": "shop", "phases": [phase]})


RELEASE = _plan(
    [
        {"id": "build", "run": "make"},
        {"id": "fetch", "run": "curl x", "requires": ["network"]},
        {"id": "push", "run": "git push", "requires": ["push"], "environment": "staging"},
        {"id": "deploy", "run": "deploy", "requires": ["deploy"], "environment": "prod"},
        {"id": "smoke", "run": "smoke", "environment": "prod"},
    ]
)


def test_strict_default_needs_a_grant_for_every_capability_and_every_prod_task() -> None:
    found = {(r.task_id, r.environment, r.capability) for r in requirements(RELEASE, STRICT)}
    assert found == {
        ("fetch", "dev", "network"),
        ("push", "staging", "push"),
        ("deploy", "prod", "run"),
        ("deploy", "prod", "deploy"),
        ("smoke", "prod", "run"),
    }


def test_policy_section_exempts_capabilities_per_environment(tmp_path: Path) -> None:
    (tmp_path / "vigil.toml").write_text(
        '[policy]\nprotected = ["prod", "staging"]\nfree = { dev = ["network"], "*" = ["push"] }\n'
    )
    policy = load_config(tmp_path).section("policy", PolicyConfig)
    found = {(r.task_id, r.capability) for r in requirements(RELEASE, policy)}
    assert found == {("push", "run"), ("deploy", "run"), ("deploy", "deploy"), ("smoke", "run")}


def test_bad_policy_section_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "vigil.toml").write_text('[policy]\nprotectd = ["prod"]\n')
    with pytest.raises(ConfigError):
        load_config(tmp_path).section("policy", PolicyConfig)


def test_task_environment_overrides_phase_environment() -> None:
    plan = _plan(
        [{"id": "a", "run": "x"}, {"id": "b", "run": "y", "environment": "dev"}], phase_env="prod"
    )
    assert [(r.task_id, r.environment) for r in requirements(plan, STRICT)] == [("a", "prod")]


def test_missing_grants_come_with_the_exact_command_that_covers_them() -> None:
    missing = check_plan(RELEASE, STRICT, None, NOW, plan_path="plans/release.yaml")
    by_env = {m.environment: m for m in missing}
    assert set(by_env) == {"dev", "staging", "prod"}
    assert all(m.code == GrantRequired.code for m in missing)
    assert by_env["prod"].tasks == ("deploy", "smoke")
    assert shlex.split(by_env["prod"].command) == [
        "vigil", "grant", "create", "--project", "shop", "--env", "prod",
        "--allow", "deploy", "--expires-in", "1h", "--plan", "plans/release.yaml",
    ]  # fmt: skip

    # Running exactly those commands (as the library calls) covers the plan.
    plan_hash = RELEASE.content_hash()
    for m in missing:
        caps = tuple(c for c in m.capabilities if c != "run")
        grant = create_grant(
            project="shop",
            environments=(m.environment,),
            capabilities=caps,
            expires_in=3600,
            plan_hash=plan_hash,
            now=NOW,
        )
        assert not [
            x for x in check_plan(RELEASE, STRICT, grant, NOW) if x.environment == m.environment
        ]


def test_require_plan_raises_with_commands_in_the_details() -> None:
    with pytest.raises(GrantRequired) as info:
        require_plan(RELEASE, STRICT, None, NOW, plan_path="release.yaml")
    assert any(line.strip().startswith("vigil grant create") for line in info.value.details)


def test_one_grant_covering_everything_leaves_nothing_missing() -> None:
    grant = create_grant(
        project="shop",
        environments=("dev", "staging", "prod"),
        capabilities=("network", "push", "deploy"),
        expires_in=3600,
        plan_hash=RELEASE.content_hash(),
        now=NOW,
    )
    assert check_plan(RELEASE, STRICT, grant, NOW) == []


def test_authorize_right_before_an_action_sees_expiry_and_revocation_mid_run() -> None:
    grant = create_grant(
        project="shop", environments=("prod",), capabilities=("deploy",), expires_in=600, now=NOW
    )
    req = Requirement("deploy", "prod", "deploy", "shop")
    first = authorize(req, grant, NOW, RELEASE.content_hash())
    assert first.allowed and first.code is None
    later = authorize(req, grant, NOW + timedelta(minutes=11), RELEASE.content_hash())
    assert (later.allowed, later.code) == (False, "VIGIL-GRANT-EXPIRED")
    revoke_grant(grant.id)
    revoked = authorize(req, grant, NOW + timedelta(minutes=1), RELEASE.content_hash())
    assert (revoked.allowed, revoked.code) == (False, "VIGIL-GRANT-REVOKED")
    none = authorize(req, None, NOW, None)
    assert (none.allowed, none.code) == (False, "VIGIL-GRANT-REQUIRED")


def test_a_grant_bound_to_the_plan_refuses_an_edited_plan() -> None:
    grant = create_grant(
        project="shop",
        environments=("prod",),
        capabilities=("deploy",),
        expires_in=600,
        plan_hash=RELEASE.content_hash(),
        now=NOW,
    )
    edited = RELEASE.model_copy(update={"description": "sneaky"})
    req = Requirement("deploy", "prod", "deploy", "shop")
    assert authorize(req, grant, NOW, RELEASE.content_hash()).allowed
    decision = authorize(req, grant, NOW, edited.content_hash())
    assert decision.code == "VIGIL-GRANT-PLAN"


CAPS = st.lists(st.sampled_from(["network", "deploy", "push", "db"]), max_size=3)
ENVS = st.one_of(st.none(), st.sampled_from(["dev", "staging", "prod"]))


@given(st.lists(st.tuples(CAPS, ENVS), min_size=1, max_size=6), st.sampled_from(["dev", "qa"]))
@settings(max_examples=150, deadline=None)
def test_requirements_are_exactly_the_declared_capabilities_plus_protected_runs(
    tasks: list[tuple[list[str], str | None]], default_env: str
) -> None:
    plan = _plan(
        [
            {"id": f"t{i}", "run": "x", "requires": caps, "environment": env}
            for i, (caps, env) in enumerate(tasks)
        ]
    )
    policy = PolicyConfig(default_environment=default_env, free={"staging": ("db",)})
    expected = set()
    for i, (caps, env) in enumerate(tasks):
        where = env or default_env
        if where == "prod":
            expected.add((f"t{i}", where, "run"))
        for cap in caps:
            if not (where == "staging" and cap == "db"):
                expected.add((f"t{i}", where, cap))
    got = [(r.task_id, r.environment, r.capability) for r in requirements(plan, policy)]
    assert set(got) == expected and len(got) == len(expected)
