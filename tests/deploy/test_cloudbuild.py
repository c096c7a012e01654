"""cloudbuild.yaml of every answer combination: the Cloud Build schema, declared substitutions,
the steps the answers need, jobs passing args (never --command), a private service.
"""

from __future__ import annotations

from pathlib import Path

from ..conftest import run
from .support import (
    BUILTIN_SUBSTITUTIONS,
    CHECK_JSONSCHEMA,
    CLOUD_TASKS_MAX_DEADLINE_SECONDS,
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
        expected.append("migrate")
    expected.append("deploy")
    if "cloud_run_jobs" in answers["google_backends"]:
        expected.append("deploy-task-runner")
    if "cloud_scheduler" in answers["google_backends"]:
        expected.append("sync-schedules")
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
        assert job_flags["args"].startswith("python,manage.py,"), step_id
    if answers["database"] == "postgres":
        assert jobs["migrate"]["args"] == "python,manage.py,migrate,--noinput"
        assert {"execute-now", "wait"} <= set(jobs["migrate"]), "a failed migration fails the build"
        assert jobs["migrate"]["max-retries"] == "0"
    if "cloud_run_jobs" in answers["google_backends"]:
        assert steps["deploy-task-runner"]["args"][3] == "${_SERVICE}-tasks"
        assert jobs["deploy-task-runner"]["args"].split(",") == backend_default_command(dst)
    if "cloud_scheduler" in answers["google_backends"]:
        assert jobs["sync-schedules"]["args"] == "python,manage.py,sync_scheduled_tasks,--prune"
        assert {"execute-now", "wait"} <= set(jobs["sync-schedules"])


def test_cloudbuild_deploys_a_private_service(rendered: Rendered) -> None:
    dst, answers = rendered
    build = load_build(dst)
    steps = gcloud_steps(build)
    deploy = flags(next(step for step in steps if step["id"] == "deploy")["args"])
    assert "no-allow-unauthenticated" in deploy
    assert "allow-unauthenticated" not in deploy
    assert duration_seconds(deploy["timeout"]) >= CLOUD_TASKS_MAX_DEADLINE_SECONDS
    # The service and every job share one configuration: same secrets, env, identity and image.
    for step in steps:
        step_flags = flags(step["args"])
        for name in ["set-secrets", "update-env-vars", "service-account", "image", "region"]:
            assert step_flags[name] == deploy[name], (step["id"], name)
        assert "set-env-vars" not in step_flags, "--set-env-vars would drop variables set outside the build"
        if answers["database"] == "postgres":
            assert step_flags["set-cloudsql-instances"] == "${_CLOUDSQL_INSTANCE}", step["id"]
        else:
            assert "set-cloudsql-instances" not in step_flags, step["id"]
    env = env_vars(deploy["update-env-vars"])
    assert env["CLOUDRUN_SERVICE_URLS"] == "${_SERVICE_URL}${_EXTRA_URLS}"
    # A private service receives push tokens with their signature removed by Cloud Run: without
    # this the app would refuse every push.
    assert env["TASKS_OIDC_TRUST_PLATFORM_SIGNATURE"] == "true"
    assert (
        build["substitutions"]["_SERVICE_URL"] == "https://${_SERVICE}-${PROJECT_NUMBER}.${_REGION}.run.app"
    )
    secret_names = dict(item.split("=", 1) for item in deploy["set-secrets"].split(","))
    expected_secrets = {"DJANGO_SECRET_KEY": "${_SERVICE}-secret-key:latest"}
    if answers["database"] == "postgres":
        expected_secrets["DATABASE_URL"] = "${_SERVICE}-database-url:latest"
        assert build["substitutions"]["_CLOUDSQL_INSTANCE"] == "${PROJECT_ID}:${_REGION}:acme-orders-db"
    else:
        assert deploy["max-instances"] == "1", "SQLite lives in the container: one instance"
    assert secret_names == expected_secrets
    # Every variable the build sets is one the settings read.
    settings = (dst / "config" / "settings.py").read_text()
    for name in [*env, *secret_names]:
        assert f'"{name}"' in settings, f"{name} is set by the build but never read by config/settings.py"
