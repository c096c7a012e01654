"""deploy/bootstrap.sh of every answer combination, run against a recording stand-in for gcloud
(dry run, first run, re-run), and the README's deploy walk-through against the deploy files.
"""

from __future__ import annotations

import re
import shutil
import stat
from pathlib import Path

import pytest

from ..conftest import run
from .support import (
    BOOTSTRAP_ALWAYS,
    BOOTSTRAP_FEATURES,
    RUNTIME_SA,
    SERVICE,
    Bootstrap,
    Rendered,
    features,
    flags,
    gcloud_steps,
    load_build,
    resolved_substitutions,
    substitute,
)


def test_bootstrap_is_an_executable_bash_script(rendered: Rendered) -> None:
    dst, _ = rendered
    script = dst / "deploy" / "bootstrap.sh"
    assert script.stat().st_mode & stat.S_IXUSR
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in script.read_text()
    run(["bash", "-n", script], dst)


def test_bootstrap_scripts_pass_shellcheck(every_case: list[Path]) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (Debian: apt-get install shellcheck; .ci/run installs it)")
    run([shellcheck, *(dst / "deploy" / "bootstrap.sh" for dst in every_case)], Path.cwd())


def test_bootstrap_dry_run_prints_the_commands_and_runs_nothing(
    rendered: Rendered, bootstrap: Bootstrap
) -> None:
    _, answers = rendered
    output = bootstrap("--dry-run").stdout
    assert bootstrap.calls() == [], "a dry run must not call gcloud"
    lines = [line for line in output.splitlines() if line and not line.startswith("#")]
    for expected in BOOTSTRAP_ALWAYS:
        assert any(expected in line for line in lines), expected
    chosen = features(answers)
    for feature, markers in BOOTSTRAP_FEATURES.items():
        for marker in markers:
            assert any(marker in line for line in lines) == (feature in chosen), (feature, marker)


def test_bootstrap_first_run_creates_everything_without_printing_secrets(
    rendered: Rendered, bootstrap: Bootstrap
) -> None:
    _, answers = rendered
    result = bootstrap()
    calls = bootstrap.calls()
    commands = [" ".join(call) for call in calls]
    creates = [command for command in commands if " create " in f" {command} "]
    assert any(command.startswith("secrets create acme-orders-secret-key") for command in creates)
    secret_values = bootstrap.stdin.read_text().splitlines()
    secret_key = secret_values[0]
    assert len(secret_key) >= 50 and len(set(secret_key)) >= 5, "Django's check --deploy rules"
    revealed = secret_values[:]
    if answers["database"] == "postgres":
        user_create = next(call for call in calls if call[:3] == ["sql", "users", "create"])
        password = flags(user_create)["password"]
        assert secret_values[1] == (
            f"postgres://acme_orders:{password}@%2Fcloudsql%2Facme-test-123%3Aus-central1%3Aacme-orders-db/acme_orders"
        )
        revealed.append(password)
    for value in revealed:
        assert value not in result.stdout + result.stderr, "a secret was printed"
        assert not any(value in command for command in commands if not command.startswith("sql users")), (
            "a secret was passed on a command line"
        )
    if "pushes" in features(answers):
        # The service does not exist before the first deploy: the script says to run it again.
        assert not any("run services add-iam-policy-binding" in command for command in commands)
        assert "run this script again" in result.stderr


def test_bootstrap_rerun_creates_nothing(rendered: Rendered, bootstrap: Bootstrap) -> None:
    _, answers = rendered
    bootstrap(existing="all")
    commands = [" ".join(call) for call in bootstrap.calls()]
    changing = [c for c in commands if re.search(r"\b(create|set-password)\b", c)]
    assert changing == []
    assert any("add-iam-policy-binding" in command for command in commands), "grants are re-applied"
    if "cloud_tasks" in answers["google_backends"]:
        assert any(command.startswith("tasks queues update acme-orders-default") for command in commands)
    if "pushes" in features(answers):
        assert any(
            command.startswith("run services add-iam-policy-binding acme-orders") for command in commands
        )


def test_bootstrap_creates_what_cloudbuild_uses(rendered: Rendered, bootstrap: Bootstrap) -> None:
    """Secrets, repository, runtime account and task-runner job: the same names on both sides."""
    dst, answers = rendered
    values = resolved_substitutions(load_build(dst))
    deploy = flags(next(step for step in gcloud_steps(load_build(dst)) if step["id"] == "deploy")["args"])
    output = bootstrap("--dry-run").stdout
    for secret in deploy["set-secrets"].split(","):
        name = substitute(secret.split("=", 1)[1], values).removesuffix(":latest")
        assert f"gcloud secrets create {name} " in output
    assert (
        f"gcloud artifacts repositories create {values['_REPOSITORY']} --repository-format=docker" in output
    )
    assert substitute(deploy["service-account"], values) == RUNTIME_SA
    assert f"gcloud iam service-accounts create {RUNTIME_SA.split('@')[0]} " in output
    if "cloud_run_jobs" in answers["google_backends"]:
        job = next(step for step in gcloud_steps(load_build(dst)) if step["id"] == "deploy-task-runner")
        assert f"gcloud run jobs create {substitute(job['args'][3], values)} " in output
    if answers["database"] == "postgres":
        instance = substitute("${_CLOUDSQL_INSTANCE}", values).rsplit(":", 1)[1]
        assert f"gcloud sql instances create {instance} " in output


def test_readme_walks_through_the_deploy_of_these_files(rendered: Rendered) -> None:
    dst, answers = rendered
    readme = (dst / "README.md").read_text()
    section = readme[readme.index("## Deploy to Google Cloud") :]
    for command in [
        "deploy/bootstrap.sh --dry-run",
        "gcloud builds submit --config cloudbuild.yaml --substitutions=_TAG=$(git rev-parse --short HEAD)",
    ]:
        assert command in section
    assert (
        "gcloud builds submit --config cloudbuild.yaml --substitutions=_TAG="
        in (dst / "cloudbuild.yaml").read_text()
    )
    build = load_build(dst)
    values = resolved_substitutions(build)
    deployed = {
        substitute(step["args"][3], values)
        for step in gcloud_steps(build)
        if step["args"][:2] == ["run", "jobs"]
    }
    for job in [f"{SERVICE}-migrate", f"{SERVICE}-tasks", f"{SERVICE}-sync-schedules"]:
        assert (f"`{job}`" in section) == (job in deployed), job
    assert ("SQLite is a demo setup" in section) == (answers["database"] == "sqlite")
