"""cloudbuild.yaml of every answer combination: the Cloud Build schema, declared substitutions,
the steps the answers need, jobs passing args (never --command), a private service, its own build
account, limits sized to Cloud SQL and Cloud Tasks, and SQLite as a single container.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from ..conftest import run
from .support import (
    BUILTIN_SUBSTITUTIONS,
    CHECK_JSONSCHEMA,
    CLOUD_TASKS_MAX_DEADLINE_SECONDS,
    PROJECT_ID,
    SERVICE,
    Rendered,
    backend_default_command,
    duration_seconds,
    env_vars,
    flags,
    gcloud_steps,
    load_build,
    strings,
    substitution_references,
)


def test_cloudbuild_files_match_the_schema(every_case: list[Path]) -> None:
    files = [dst / "cloudbuild.yaml" for dst in every_case]
    run([CHECK_JSONSCHEMA, "--builtin-schema", "vendor.cloudbuild", *files], Path.cwd())


def test_cloudbuild_uses_only_declared_substitutions(rendered: Rendered) -> None:
    dst, _ = rendered
    build = load_build(dst)
    declared = set(build["substitutions"])
    assert all(name.startswith("_") for name in declared), "user substitutions start with _"
    used = {name for value in strings(build) for name in substitution_references(value)}
    assert used - declared - BUILTIN_SUBSTITUTIONS == set()
    assert declared - used == set(), "every declared substitution is used"
    # Substitutions that refer to other substitutions need dynamic substitutions.
    assert build["options"]["dynamicSubstitutions"] is True
    assert build["substitutions"]["_TAG"] and "${_TAG}" in build["steps"][0]["args"][1]


def test_cloudbuild_has_the_steps_the_answers_need(rendered: Rendered) -> None:
    dst, answers = rendered
    expected = ["build", "push"]
    if answers["database"] == "postgres":
        expected += ["migrate", "deploy"]
        if "cloud_run_jobs" in answers["google_backends"]:
            expected.append("deploy-task-runner")
        # Recovery and retention jobs, run by Cloud Scheduler jobs the bootstrap creates (defect 8).
        expected += ["deploy-recover", "deploy-prune"]
        if "cloud_scheduler" in answers["google_backends"]:
            expected.append("sync-schedules")
    else:
        # SQLite: one container, no jobs and no Google task services (defect 13).
        expected.append("deploy")
    assert [step["id"] for step in load_build(dst)["steps"]] == expected


def test_cloudbuild_jobs_pass_args_never_command(rendered: Rendered) -> None:
    """CloudRunJobsBackend overrides a run's args with its `command` option + the execution id."""
    dst, answers = rendered
    steps = {step["id"]: step for step in gcloud_steps(load_build(dst))}
    for step in steps.values():
        assert not any(arg.startswith("--command") for arg in step["args"]), step["id"]
    jobs = {
        step["id"]: flags(step["args"])
        for step in steps.values()
        if step["args"][:3] == ["run", "jobs", "deploy"]
    }
    for step_id, job_flags in jobs.items():
        if step_id != "migrate":
            assert job_flags["args"].startswith("python,manage.py,"), step_id
    if answers["database"] == "postgres":
        # `check --deploy` with the real secrets before migrating: a weak key or unsafe setting
        # stops the deploy before anything changes (finding 3).
        assert jobs["migrate"]["args"].split(",") == [
            "sh",
            "-c",
            "python manage.py check --deploy --fail-level WARNING && python manage.py migrate --noinput",
        ]
        assert {"execute-now", "wait"} <= set(jobs["migrate"]), "a failed migration fails the build"
        assert jobs["migrate"]["max-retries"] == "0"
        # Deployed on every build with the new image, run by Cloud Scheduler: never executed here.
        assert steps["deploy-recover"]["args"][3] == "${_SERVICE}-recover"
        assert jobs["deploy-recover"]["args"] == "python,manage.py,recover_tasks"
        assert steps["deploy-prune"]["args"][3] == "${_SERVICE}-prune"
        assert jobs["deploy-prune"]["args"] == "python,manage.py,prune_task_executions"
        for step_id in ["deploy-recover", "deploy-prune"]:
            assert not {"execute-now", "wait"} & set(jobs[step_id]), step_id
        if "cloud_run_jobs" in answers["google_backends"]:
            assert steps["deploy-task-runner"]["args"][3] == "${_SERVICE}-tasks"
            assert jobs["deploy-task-runner"]["args"].split(",") == backend_default_command(dst)
        if "cloud_scheduler" in answers["google_backends"]:
            assert jobs["sync-schedules"]["args"] == "python,manage.py,sync_scheduled_tasks,--prune"
            assert {"execute-now", "wait"} <= set(jobs["sync-schedules"])
    else:
        assert jobs == {}, "SQLite: no Cloud Run Jobs (each would have its own copy of the database)"


def test_cloudbuild_deploys_a_private_service(rendered: Rendered) -> None:
    dst, answers = rendered
    postgres = answers["database"] == "postgres"
    build = load_build(dst)
    steps = gcloud_steps(build)
    deploy = flags(next(step for step in steps if step["id"] == "deploy")["args"])
    assert "no-allow-unauthenticated" in deploy
    assert "allow-unauthenticated" not in deploy
    # The service and every job share one configuration: same secrets, env, identity and image.
    for step in steps:
        step_flags = flags(step["args"])
        for name in ["set-secrets", "update-env-vars", "service-account", "image", "region"]:
            assert step_flags[name] == deploy[name], (step["id"], name)
        assert "set-env-vars" not in step_flags, "--set-env-vars would drop variables set outside the build"
        if postgres:
            assert step_flags["set-cloudsql-instances"] == "${_CLOUDSQL_INSTANCE}", step["id"]
        else:
            assert "set-cloudsql-instances" not in step_flags, step["id"]
    env = env_vars(deploy["update-env-vars"])
    assert env["CLOUDRUN_SERVICE_URLS"] == "${_SERVICE_URL}${_EXTRA_URLS}"
    assert (
        build["substitutions"]["_SERVICE_URL"] == "https://${_SERVICE}-${PROJECT_NUMBER}.${_REGION}.run.app"
    )
    secret_names = dict(item.split("=", 1) for item in deploy["set-secrets"].split(","))
    expected_secrets = {"DJANGO_SECRET_KEY": "${_SERVICE}-secret-key:latest"}
    if postgres:
        # A private service receives push tokens with their signature removed by Cloud Run: without
        # this the app would refuse every push.
        assert env["TASKS_OIDC_TRUST_PLATFORM_SIGNATURE"] == "true"
        expected_secrets["DATABASE_URL"] = "${_SERVICE}-database-url:latest"
        # The key of the MAC every push carries (issue 12).
        expected_secrets["TASKS_PUSH_SECRET"] = "${_SERVICE}-push-secret:latest"
        assert build["substitutions"]["_CLOUDSQL_INSTANCE"] == "${PROJECT_ID}:${_REGION}:acme-orders-db"
    else:
        # SQLite receives no pushes: nothing to trust, no push secret.
        assert "TASKS_OIDC_TRUST_PLATFORM_SIGNATURE" not in env
    assert secret_names == expected_secrets
    # Every variable the build sets is one the service's code reads.
    code = "\n".join(
        path.read_text()
        for path in [dst / "config" / "settings.py", *(dst / "django_tasks_google").rglob("*.py")]
    )
    for name in [*env, *secret_names]:
        assert f'"{name}"' in code, f"{name} is set by the build but never read by the settings or the app"


def test_cloudbuild_runs_as_its_own_build_account(rendered: Rendered) -> None:
    """Not Cloud Build's default account (in new projects the Compute Engine default one): finding 6."""
    dst, _ = rendered
    build = load_build(dst)
    assert build["serviceAccount"] == (
        f"projects/{PROJECT_ID}/serviceAccounts/{SERVICE}-build@{PROJECT_ID}.iam.gserviceaccount.com"
    )
    # A build with a user-specified account must log to Cloud Logging or a bucket of the user's.
    assert build["options"]["logging"] == "CLOUD_LOGGING_ONLY"


def gunicorn_settings(dst: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    for name in ["PORT", "WEB_CONCURRENCY", "GUNICORN_THREADS"]:
        monkeypatch.delenv(name, raising=False)
    return runpy.run_path(str(dst / "gunicorn.conf.py"))


def startup_probe(value: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in value.split(","))


# Cloud SQL for PostgreSQL's smallest tier (db-f1-micro, which the bootstrap creates) accepts 25
# connections (https://cloud.google.com/sql/docs/postgres/quotas); the service may take 16, leaving
# 9 for the jobs and PostgreSQL's reserved slots.
CLOUD_SQL_SMALLEST_TIER_CONNECTIONS = 25
CONNECTIONS_LEFT_FOR_JOBS = 9


def test_cloudbuild_limits_fit_cloud_sql_and_cloud_tasks(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Instances x threads x (request + heartbeat) under Cloud SQL's limit (defect 7); the request
    timeout equal to Cloud Tasks' longest dispatch deadline (defect 9); a startup probe on /readyz."""
    dst, answers = rendered
    build = load_build(dst)
    deploy = flags(next(step for step in gcloud_steps(build) if step["id"] == "deploy")["args"])
    gunicorn = gunicorn_settings(dst, monkeypatch)
    threads = int(gunicorn["workers"]) * int(gunicorn["threads"])  # type: ignore[call-overload]
    assert deploy["concurrency"] == str(threads), "requests queue at Cloud Run's front end, not in gunicorn"
    assert duration_seconds(deploy["timeout"]) == CLOUD_TASKS_MAX_DEADLINE_SECONDS
    probe = startup_probe(deploy["startup-probe"])
    assert probe["httpGet.path"] == "/readyz" and probe["httpGet.port"] == "8080"
    assert int(probe["failureThreshold"]) * int(probe["periodSeconds"]) <= 240, "Google's limit"
    assert int(probe["timeoutSeconds"]) <= int(probe["periodSeconds"])
    if answers["database"] == "postgres":
        assert deploy["max-instances"] == "${_MAX_INSTANCES}"
        max_instances = int(build["substitutions"]["_MAX_INSTANCES"])
        connections = max_instances * threads * 2
        assert connections <= CLOUD_SQL_SMALLEST_TIER_CONNECTIONS - CONNECTIONS_LEFT_FOR_JOBS
        assert f"= {connections}" in (dst / "cloudbuild.yaml").read_text(), "the comment states the sum"
        assert "min-instances" not in deploy and "no-cpu-throttling" not in deploy
    else:
        # One always-on container: it holds the database and runs the task worker (defect 13).
        assert (deploy["min-instances"], deploy["max-instances"]) == ("1", "1")
        assert "no-cpu-throttling" in deploy
        text = (dst / "cloudbuild.yaml").read_text()
        assert "ALL DATA IS LOST" in text and "PostgreSQL is what uses Cloud Tasks" in text
