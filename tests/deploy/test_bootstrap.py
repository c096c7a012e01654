"""deploy/bootstrap.sh of every answer combination, run against a recording stand-in for gcloud
(dry run, first run, re-run, the IAM it grants), and the README's deploy walk-through against the
deploy files. test_bootstrap_gcloud.py runs the script through the real gcloud.
"""

from __future__ import annotations

import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from ..conftest import run
from .bootstrap_iam import BROAD_ROLES, expected_grants, grant_of_command
from .support import (
    BOOTSTRAP_ALWAYS,
    BOOTSTRAP_FEATURES,
    GCLOUD_CASE,
    PROJECT_ID,
    RUNTIME_SA,
    SERVICE,
    Bootstrap,
    Rendered,
    command_shape,
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
        assert any(command.startswith("secrets create acme-orders-push-secret") for command in creates)
        assert len(secret_values[1]) >= 50 and secret_values[1] != secret_key
        user_create = next(call for call in calls if call[:3] == ["sql", "users", "create"])
        password = flags(user_create)["password"]
        assert secret_values[2] == (
            f"postgres://acme_orders:{password}@%2Fcloudsql%2Facme-test-123%3Aus-central1%3Aacme-orders-db/acme_orders"
        )
        revealed.append(password)
    for value in revealed:
        assert value not in result.stdout + result.stderr, "a secret was printed"
        assert not any(value in command for command in commands if not command.startswith("sql users")), (
            "a secret was passed on a command line"
        )
    # Finding 5 of issue 12: its YAML output was used as a member; builds now run as a fixed account.
    assert not any(command.startswith("builds ") for command in commands)


def test_bootstrap_grants_the_least_privilege_of_each_feature(
    rendered: Rendered, bootstrap: Bootstrap
) -> None:
    """Each binding names its resource; project-wide only where Google offers nothing narrower."""
    _, answers = rendered
    bootstrap()
    grants = {grant_of_command(call) for call in bootstrap.calls() if "add-iam-policy-binding" in call}
    assert grants == expected_grants(answers)
    assert not [grant for grant in grants if grant[2] == "project" and grant[1] in BROAD_ROLES]


def test_bootstrap_rerun_creates_nothing(rendered: Rendered, bootstrap: Bootstrap) -> None:
    _, answers = rendered
    bootstrap(existing="all")
    commands = [" ".join(call) for call in bootstrap.calls()]
    changing = [" ".join(call) for call in bootstrap.calls() if {"create", "set-password"} & set(call)]
    assert changing == []
    assert any("add-iam-policy-binding" in command for command in commands), "grants are re-applied"
    # Settings are re-applied to what exists, so an edited schedule or retry policy is restored.
    if "cloud_tasks" in features(answers):
        assert any(command.startswith("tasks queues update acme-orders-default") for command in commands)
    if "postgres" in features(answers):
        for job in ["acme-orders-recover", "acme-orders-prune"]:
            assert any(command.startswith(f"scheduler jobs update http {job} ") for command in commands)
    if "cloud_scheduler" in features(answers):
        assert any(command.startswith("iam roles update acme_orders_schedules ") for command in commands)


@pytest.fixture(scope="module")
def real_gcloud_shapes(
    render_case: Callable[[str], Rendered], tmp_path_factory: pytest.TempPathFactory
) -> set[tuple[str, ...]]:
    """The command shapes of GCLOUD_CASE's first run and re-run (what test_bootstrap_gcloud.py runs)."""
    bootstrap = Bootstrap(render_case(GCLOUD_CASE)[0], tmp_path_factory.mktemp("real-gcloud-case"))
    bootstrap()
    bootstrap(existing="all")
    return {command_shape(call) for call in bootstrap.calls()}


def test_the_real_gcloud_case_runs_every_command_of_this_case(
    bootstrap: Bootstrap, real_gcloud_shapes: set[tuple[str, ...]]
) -> None:
    """test_bootstrap_gcloud.py runs one case through the real gcloud; no other case's bootstrap may
    run a command (command and flag names) that this one does not, on a first run or a re-run."""
    bootstrap()
    bootstrap(existing="all")
    shapes = {command_shape(call) for call in bootstrap.calls()}
    assert shapes - real_gcloud_shapes == set()


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
    assert f"gcloud run deploy {values['_SERVICE']} " in output, "the service exists before the first build"
    if answers["database"] == "postgres":
        # Each job the build deploys exists first, so the build account's role can be bound on it.
        jobs = [
            step["args"][3]
            for step in gcloud_steps(load_build(dst))
            if step["args"][:3] == ["run", "jobs", "deploy"]
        ]
        for job in jobs:
            assert f"gcloud run jobs create {substitute(job, values)} " in output
    else:
        # One container: the build deploys no job, so none is created (cloudbuild's side: test_cloudbuild.py).
        assert "gcloud run jobs create" not in output
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


def test_readme_iam_table_lists_exactly_what_the_bootstrap_grants(rendered: Rendered) -> None:
    dst, answers = rendered
    readme = (dst / "README.md").read_text()
    section = readme[readme.index("### What the bootstrap creates, and why (IAM)") :]
    section = re.split(r"\n##+ ", section[4:], maxsplit=1)[0]  # up to the next heading
    kinds = {"bucket": "bucket", "repository": "repository", "service": "run service", "job": "run job"}
    kinds |= {"account": "service account", "secret": "secret", "queue": "queue"}
    rows = re.findall(r"^\| `([\w-]+)` \| (?:custom )?`([\w./]+)` \| (.+?) \| .+ \|$", section, re.M)
    grants = set()
    for account, role, resource in rows:
        member = f"serviceAccount:{account}@{PROJECT_ID}.iam.gserviceaccount.com"
        role = role if role.startswith("roles/") else f"projects/{PROJECT_ID}/roles/{role}"
        if resource == "*project*":
            grants.add((member, role, "project", PROJECT_ID))
        else:
            kind, name = resource.split(" ")
            name = name.strip("`")
            if kind == "account":
                name = f"{name}@{PROJECT_ID}.iam.gserviceaccount.com"
            grants.add((member, role, kinds[kind], name))
    assert len(rows) == len(grants) and grants == expected_grants(answers)
