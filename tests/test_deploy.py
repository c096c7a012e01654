"""Deployment files: Dockerfile, gunicorn.conf.py, cloudbuild.yaml, deploy/bootstrap.sh, README.

Fast tier, for every answer combination of the render matrix: hadolint, the Cloud Build schema,
substitutions, the build steps each combination needs, one image whose jobs pass args (never
--command), shellcheck, the bootstrap script run against a recording stand-in for gcloud (dry
run, first run, re-run), and the README's deploy walk-through against those files.

Slow tier: the real gcloud, without credentials, parses every command of the three files;
production settings pass `check --deploy`; and the Dockerfile's steps are replayed without Docker
(lock-only dependency layer, collectstatic, the migrate job, the image's CMD under the deploy's
environment), then real HTTP requests and Cloud Tasks pushes (through the generated project's
gRPC fake and test OIDC issuer) are sent to it.
"""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import UV, VARIANTS, Render, database_url, project_env, run, uv
from .test_render import matrix

SERVICE = "acme-orders"
PROJECT_ID = "acme-test-123"
REGION = "us-central1"
PROJECT_NUMBER = "123456"
SERVICE_URL = f"https://acme-orders-{PROJECT_NUMBER}.us-central1.run.app"
RUNTIME_SA = "acme-orders-run@acme-test-123.iam.gserviceaccount.com"
INVOKER_SA = "acme-orders-invoker@acme-test-123.iam.gserviceaccount.com"
BUILD_SA_EXAMPLE = "123456789012-compute@developer.gserviceaccount.com"
# Substitutions Cloud Build provides to every build, including `gcloud builds submit` (trigger-only
# ones such as SHORT_SHA would be empty there, so the file must not rely on them).
BUILTIN_SUBSTITUTIONS = {"PROJECT_ID", "BUILD_ID", "PROJECT_NUMBER", "LOCATION"}
# Cloud Tasks' longest dispatch deadline: the service must not cut a push shorter.
CLOUD_TASKS_MAX_DEADLINE_SECONDS = 30 * 60

HADOLINT = Path(sys.executable).with_name("hadolint")
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")


CASES = {param.id: param.values[0] for param in matrix()}
Rendered = tuple[Path, dict[str, Any]]


@pytest.fixture(scope="module")
def render_case(render: Render, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Rendered]:
    """`render_case(case_id)`: the matrix case rendered once per module (linters take them all at once)."""
    cache: dict[str, Rendered] = {}

    def get(case_id: str) -> Rendered:
        if case_id not in cache:
            answers = CASES[case_id]
            cache[case_id] = (render(tmp_path_factory.mktemp("deploy") / "service", **answers), answers)
        return cache[case_id]

    return get


@pytest.fixture(scope="module", params=sorted(CASES))
def rendered(request: pytest.FixtureRequest, render_case: Callable[[str], Rendered]) -> Rendered:
    return render_case(request.param)


@pytest.fixture(scope="module")
def every_case(render_case: Callable[[str], Rendered]) -> list[Path]:
    return [render_case(case_id)[0] for case_id in sorted(CASES)]


# --- Dockerfile ---------------------------------------------------------------------------------


def dockerfile_stages(text: str) -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions as (KEYWORD, rest) per stage, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line.strip())
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword.upper(), rest.strip()))
    return stages


def env_assignments(rest: str) -> dict[str, str]:
    """`ENV A=1 B="x y"` -> {"A": "1", "B": "x y"}."""
    return dict(word.split("=", 1) for word in shlex.split(rest))


def test_dockerfiles_pass_hadolint(every_case: list[Path]) -> None:
    run([HADOLINT, "--failure-threshold", "info", *(dst / "Dockerfile" for dst in every_case)], Path.cwd())


def test_one_image_serves_the_service_and_every_job(rendered: Rendered) -> None:
    """CMD only: a Cloud Run job's args replace CMD, so a job's args must start with the executable."""
    dst, answers = rendered
    text = (dst / "Dockerfile").read_text()
    build, runtime = dockerfile_stages(text)
    instructions = [keyword for keyword, _ in build + runtime]
    assert "ENTRYPOINT" not in instructions
    assert json.loads(dict(runtime)["CMD"]) == ["gunicorn", "config.wsgi:application"]
    assert f"ARG PYTHON_VERSION={answers['python_version']}\n" in text
    assert all(
        rest.startswith("python:${PYTHON_VERSION}-slim")
        for keyword, rest in build + runtime
        if keyword == "FROM"
    )
    assert re.fullmatch(r"\d+:\d+", dict(runtime)["USER"]), "a numeric non-root user"
    runtime_env = {
        k: v for keyword, rest in runtime if keyword == "ENV" for k, v in env_assignments(rest).items()
    }
    assert runtime_env["PYTHONUNBUFFERED"] == "1"
    assert runtime_env["DJANGO_SETTINGS_MODULE"] == "config.settings"
    # The dependency layer is built from the lock alone, before the code is copied in.
    runs = [rest for keyword, rest in build if keyword == "RUN"]
    copy_code = [i for i, (keyword, rest) in enumerate(build) if keyword == "COPY" and rest == ". ."]
    first_sync = next(i for i, (keyword, rest) in enumerate(build) if "uv sync" in rest)
    assert first_sync < copy_code[0]
    assert "uv sync --locked --no-dev --no-install-project" in runs[0]
    assert "source=uv.lock" in runs[0] and "source=pyproject.toml" in runs[0]
    assert any(rest.endswith("uv sync --locked --no-dev") for rest in runs[1:])
    assert any("manage.py collectstatic --noinput" in rest for rest in runs)
    migrate_at_build = any("manage.py migrate" in rest for rest in runs)
    assert migrate_at_build == (answers["database"] == "sqlite")


def test_dockerignore_keeps_local_state_out_of_the_image(rendered: Rendered) -> None:
    dst, _ = rendered
    patterns = dockerignore_patterns(dst)
    left_out = [
        ".venv/bin/python",
        ".env",
        ".git/HEAD",
        "db.sqlite3",
        "staticfiles/app.css",
        "tests/test_x.py",
    ]
    kept = [
        "manage.py",
        "uv.lock",
        "pyproject.toml",
        ".python-version",
        "gunicorn.conf.py",
        "config/settings.py",
    ]
    assert [path for path in left_out if not is_ignored(path, patterns)] == []
    assert [path for path in kept if is_ignored(path, patterns)] == []


def dockerignore_patterns(dst: Path) -> list[re.Pattern[str]]:
    """`.dockerignore` as regular expressions, for the patterns this template uses (no `!` rules)."""
    patterns = []
    for line in (dst / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("!"), "exceptions are not supported by this test's matcher"
        regex = ""
        for token in re.findall(r"\*\*/|\*|\?|\[[^]]*\]|.", line):
            if token == "**/":
                regex += "(?:.*/)?"
            elif token == "*":
                regex += "[^/]*"
            elif token == "?":
                regex += "[^/]"
            elif token.startswith("[") and len(token) > 1:
                regex += token
            else:
                regex += re.escape(token)
        patterns.append(re.compile(regex))
    return patterns


def is_ignored(relative: str, patterns: list[re.Pattern[str]]) -> bool:
    """Docker's rule: a path is excluded when it or one of its parent directories matches."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(pattern.fullmatch(prefix) for prefix in prefixes for pattern in patterns)


# --- cloudbuild.yaml ----------------------------------------------------------------------------


def load_build(dst: Path) -> dict[str, Any]:
    return yaml.safe_load((dst / "cloudbuild.yaml").read_text())


def substitution_references(value: str) -> set[str]:
    """Variables Cloud Build substitutes in `value`: $VAR and ${VAR}, with `$$` an escaped `$`."""
    return {braced or bare for braced, bare in re.findall(r"\$(?:\{(\w+)\}|(\w+))", value.replace("$$", ""))}


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


def gcloud_steps(build: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for step in build["steps"] if step.get("entrypoint") == "gcloud"]


def flags(args: list[str]) -> dict[str, str]:
    """`--name=value` arguments as a dict; bare `--name` flags map to ""."""
    return {
        name: value for name, _, value in (arg[2:].partition("=") for arg in args if arg.startswith("--"))
    }


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


def backend_default_command(dst: Path) -> list[str]:
    """DEFAULT_COMMAND of the vendored CloudRunJobsBackend, read without importing Django."""
    tree = ast.parse((dst / "django_tasks_google" / "backends" / "cloud_run_jobs.py").read_text())
    for node in ast.walk(tree):
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        if any(isinstance(target, ast.Name) and target.id == "DEFAULT_COMMAND" for target in targets):
            return list(ast.literal_eval(node.value))  # type: ignore[arg-type]
    raise AssertionError("DEFAULT_COMMAND not found in cloud_run_jobs.py")


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


def env_vars(value: str) -> dict[str, str]:
    """gcloud's `^DELIM^K=V<DELIM>K=V` custom-delimiter syntax (or plain commas) as a dict."""
    delimiter = ","
    if value.startswith("^"):
        delimiter, value = value[1:].split("^", 1)
    return dict(item.split("=", 1) for item in value.split(delimiter))


def duration_seconds(value: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(number) * units[unit] for number, unit in re.findall(r"(\d+)([smh])", value))


# --- deploy/bootstrap.sh ------------------------------------------------------------------------

# A stand-in for gcloud: records each call (arguments separated by \x1f, one call per line) and the
# stdin of `secrets create`; `describe` finds a resource only when FAKE_GCLOUD_EXISTING=all.
FAKE_GCLOUD = r"""#!/usr/bin/env bash
(IFS=$'\x1f'; printf '%s\n' "$*") >> "$FAKE_GCLOUD_LOG"
case "$*" in
  *" describe "*) [[ $FAKE_GCLOUD_EXISTING == all ]] || { echo "NOT_FOUND" >&2; exit 1; } ;;
  "builds get-default-service-account") echo "123456789012-compute@developer.gserviceaccount.com" ;;
  "secrets create "*) { cat; echo; } >> "$FAKE_GCLOUD_STDIN" ;;
esac
exit 0
"""

# What the bootstrap must do for each answer, and must not do without it.
BOOTSTRAP_FEATURES: dict[str, list[str]] = {
    "postgres": [
        "gcloud sql instances create acme-orders-db --database-version=POSTGRES_17",
        "gcloud sql databases create acme_orders --instance=acme-orders-db",
        "gcloud secrets create acme-orders-database-url",
        "--role=roles/cloudsql.client",
        "sqladmin.googleapis.com",
    ],
    "cloud_tasks": [
        "gcloud tasks queues create acme-orders-default --location=us-central1 --max-attempts=",
        "--role=roles/cloudtasks.enqueuer",
        "cloudtasks.googleapis.com",
    ],
    "cloud_run_jobs": [
        "gcloud run jobs create acme-orders-tasks --region=us-central1",
        "gcloud run jobs add-iam-policy-binding acme-orders-tasks --region=us-central1 "
        f"--member=serviceAccount:{RUNTIME_SA} --role=roles/run.developer",
    ],
    "cloud_scheduler": ["--role=roles/cloudscheduler.admin", "cloudscheduler.googleapis.com"],
    # Pushes (Cloud Tasks or Cloud Scheduler) need the invoker identity and its IAM.
    "pushes": [
        "gcloud iam service-accounts create acme-orders-invoker",
        "gcloud run services add-iam-policy-binding acme-orders --region=us-central1 "
        f"--member=serviceAccount:{INVOKER_SA} --role=roles/run.invoker",
        f"gcloud iam service-accounts add-iam-policy-binding {INVOKER_SA} "
        f"--member=serviceAccount:{RUNTIME_SA} --role=roles/iam.serviceAccountUser",
    ],
}
BOOTSTRAP_ALWAYS = [
    "gcloud services enable run.googleapis.com cloudbuild.googleapis.com artifactregistry.googleapis.com",
    "gcloud artifacts repositories create acme-orders --repository-format=docker --location=us-central1",
    "gcloud iam service-accounts create acme-orders-run",
    "BUILD_SA=$(gcloud builds get-default-service-account)",
    "gcloud projects add-iam-policy-binding acme-test-123 --member=serviceAccount:${BUILD_SA} "
    "--role=roles/run.admin",
    f"gcloud iam service-accounts add-iam-policy-binding {RUNTIME_SA} "
    "--member=serviceAccount:${BUILD_SA} --role=roles/iam.serviceAccountUser",
    "gcloud secrets create acme-orders-secret-key",
    "gcloud secrets add-iam-policy-binding acme-orders-secret-key "
    f"--member=serviceAccount:{RUNTIME_SA} --role=roles/secretmanager.secretAccessor",
]


def features(answers: dict[str, Any]) -> set[str]:
    chosen = set(answers["google_backends"])
    if answers["database"] == "postgres":
        chosen.add("postgres")
    if {"cloud_tasks", "cloud_scheduler"} & chosen:
        chosen.add("pushes")
    return chosen


class Bootstrap:
    """Runs a rendered deploy/bootstrap.sh with FAKE_GCLOUD first on PATH."""

    def __init__(self, dst: Path, workdir: Path) -> None:
        self.dst = dst
        self.bin = workdir / "bin"
        self.bin.mkdir(parents=True)
        fake = self.bin / "gcloud"
        fake.write_text(FAKE_GCLOUD)
        fake.chmod(0o755)
        self.log = workdir / "gcloud.log"
        self.stdin = workdir / "gcloud.stdin"

    def __call__(self, *args: str, existing: str = "none") -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "FAKE_GCLOUD_LOG": str(self.log),
            "FAKE_GCLOUD_STDIN": str(self.stdin),
            "FAKE_GCLOUD_EXISTING": existing,
        }
        for name in ["GCP_PROJECT_ID", "GCP_REGION", "SERVICE_NAME"]:
            env.pop(name, None)
        return run(["deploy/bootstrap.sh", *args], self.dst, env=env, timeout=120)

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [line.split("\x1f") for line in self.log.read_text().splitlines()]


@pytest.fixture
def bootstrap(rendered: Rendered, tmp_path: Path) -> Bootstrap:
    return Bootstrap(rendered[0], tmp_path)


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


def resolved_substitutions(build: dict[str, Any]) -> dict[str, str]:
    """The build's substitutions with references resolved, as Cloud Build's dynamic substitution does."""
    values = {"PROJECT_ID": PROJECT_ID, "PROJECT_NUMBER": PROJECT_NUMBER, "BUILD_ID": "1", "LOCATION": REGION}
    values.update({name: str(value) for name, value in build["substitutions"].items()})
    for _ in range(len(values)):
        values = {name: substitute(value, values) for name, value in values.items()}
    return values


def substitute(value: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda match: values[match.group(1)], value)


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


# --- slow: the real gcloud, production settings, the image's steps replayed -----------------------


def gcloud_env(config_dir: Path) -> dict[str, str]:
    """An environment in which gcloud has no credentials at all, so no command can reach Google.

    Commands then stop at authentication, after gcloud parsed and validated every argument:
    a wrong flag or value fails earlier, with exit status 2 and a different message.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDSDK_", "GOOGLE_"))}
    env.update(
        CLOUDSDK_CONFIG=str(config_dir),
        CLOUDSDK_CORE_DISABLE_PROMPTS="1",
        CLOUDSDK_CORE_PROJECT=PROJECT_ID,
        HTTPS_PROXY="http://127.0.0.1:9",  # belt and braces: any request would fail
        HTTP_PROXY="http://127.0.0.1:9",
    )
    return env


def gcloud_parses(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    """'' if gcloud accepted the arguments (and stopped at authentication), else its complaint."""
    result = subprocess.run(
        ["gcloud", *argv],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode == 1 and "You do not currently have an active account selected" in result.stderr:
        return ""
    return f"gcloud {shlex.join(argv)}\n  -> exit {result.returncode}: {result.stderr.strip()[:400]}"


def readme_gcloud_commands(dst: Path) -> list[list[str]]:
    """The gcloud commands of the README's shell blocks (sign-in and configuration left out)."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", (dst / "README.md").read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().split("| ")[-1].replace("$(git rev-parse --short HEAD)", "abc1234")
            if match := re.fullmatch(r"\w+=\$\((gcloud .*)\)", line):
                line = match.group(1)
            if line.startswith("gcloud ") and not line.startswith(("gcloud auth", "gcloud config")):
                commands.append(shlex.split(line)[1:])
    return commands


@pytest.mark.slow
def test_gcloud_accepts_every_command(render: Render, tmp_path: Path) -> None:
    """Every gcloud command of cloudbuild.yaml, the bootstrap and the README, parsed by the real gcloud."""
    if shutil.which("gcloud") is None:
        pytest.skip("the Google Cloud CLI (gcloud) is not installed")
    dst = render(tmp_path / "service", **VARIANTS["postgres-all"])
    build = load_build(dst)
    values = resolved_substitutions(build)
    commands = [[substitute(arg, values) for arg in step["args"]] for step in gcloud_steps(build)]
    bootstrap = Bootstrap(dst, tmp_path / "fake")
    for line in bootstrap("--dry-run").stdout.splitlines():
        if not line.startswith(("gcloud ", "printf ", "BUILD_SA=")):
            continue
        line = line.split("| ", 1)[-1].removeprefix("BUILD_SA=$(").removesuffix(")")
        line = line.replace("${BUILD_SA}", BUILD_SA_EXAMPLE)
        words = shlex.split(line.replace("<generated>", "a-generated-password"))
        assert words[0] == "gcloud", line
        commands.append(words[1:])
    readme = readme_gcloud_commands(dst)
    assert ["builds", "submit", "--config", "cloudbuild.yaml", "--substitutions=_TAG=abc1234"] in readme
    commands += readme
    assert len(commands) > 20
    # gcloud takes seconds to start: check each command shape (command + flag names) once.
    shapes = {(*(w for w in argv if not w.startswith("--")), *sorted(flags(argv))): argv for argv in commands}
    commands = list(shapes.values())
    env = gcloud_env(tmp_path / "gcloud-config")
    with ThreadPoolExecutor(max_workers=4) as pool:
        complaints = [c for c in pool.map(lambda argv: gcloud_parses(argv, dst, env), commands) if c]
    assert complaints == []


def production_env(project: Path, database: str | None) -> dict[str, str]:
    """What Cloud Run gives the service's container: K_SERVICE, the build's variables, the secrets."""
    build = load_build(project)
    values = resolved_substitutions(build)
    deploy = flags(next(step for step in gcloud_steps(build) if step["id"] == "deploy")["args"])
    env = {name: substitute(value, values) for name, value in env_vars(deploy["update-env-vars"]).items()}
    assert env["CLOUDRUN_SERVICE_URLS"] == SERVICE_URL
    env.update(K_SERVICE=SERVICE, DJANGO_SECRET_KEY=secrets.token_urlsafe(50))
    if database:
        env["DATABASE_URL"] = database
    return env


@pytest.fixture(params=sorted(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    return request.param


def variant_database(variant: str, request: pytest.FixtureRequest, name: str) -> str | None:
    """A fresh PostgreSQL database for postgres variants; None (the settings' SQLite default) otherwise."""
    if VARIANTS[variant]["database"] != "postgres":
        return None
    server = request.getfixturevalue("postgres_url")
    db_name = f"tpl_{name}_{variant.replace('-', '_')}"
    psql = ["psql", server + "/postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c"]
    run([*psql, f"DROP DATABASE IF EXISTS {db_name}"], Path.cwd())
    run([*psql, f"CREATE DATABASE {db_name}"], Path.cwd())
    return database_url(server, db_name)


@pytest.mark.slow
def test_production_settings_pass_check_deploy(
    variant: str, synced_project: Callable[[str], Path], request: pytest.FixtureRequest
) -> None:
    project = synced_project(variant)
    env = {**production_env(project, variant_database(variant, request, "check")), "DJANGO_DEBUG": "false"}
    check = ["check", "--deploy", "--fail-level", "WARNING"]
    result = uv(project, "run", "--locked", "python", "manage.py", *check, env=env)
    assert "System check identified no issues" in result.stdout


# The Dockerfile replayed without Docker: same files (.dockerignore applied), same environment
# (paths under /app mapped to a temporary directory), same commands, in the same order.


class ReplayedImage:
    def __init__(self, project: Path, root: Path) -> None:
        self.project = project
        self.app = root / "app"
        self.build_stage, self.runtime_stage = dockerfile_stages((project / "Dockerfile").read_text())
        self.python = (project / ".venv" / "bin" / "python").resolve()
        version = re.search(r"^ARG PYTHON_VERSION=(\S+)$", (project / "Dockerfile").read_text(), re.M)
        assert version and self.python.name == f"python{version.group(1)}", (self.python, version)

    def translate(self, value: str) -> str:
        return re.sub(r"(?<![\w.-])/app(?=/|$|\s)", str(self.app), value)

    def stage_env(self, stage: list[tuple[str, str]]) -> dict[str, str]:
        env: dict[str, str] = {}
        for keyword, rest in stage:
            if keyword == "ENV":
                env.update({k: self.translate(v) for k, v in env_assignments(rest).items()})
        # The build machine's uv cache stands in for the cache mount; uv itself comes from this repo,
        # and the interpreter the project's venv was made with stands in for the base image's Python.
        env.pop("UV_CACHE_DIR", None)
        env["UV_PYTHON"] = str(self.python)
        outer_path = f"{UV.parent}{os.pathsep}{os.environ['PATH']}"
        env["PATH"] = env.get("PATH", "$PATH").replace("$PATH", outer_path)
        return env

    def build(self) -> None:
        """Run the build stage: RUNs before `COPY . .` see only their bind-mounted files."""
        self.app.mkdir(parents=True)
        env = project_env(self.stage_env(self.build_stage))
        for keyword, rest in self.build_stage:
            if keyword == "COPY" and rest == ". .":
                self.copy_context()
            elif keyword == "RUN":
                words = shlex.split(rest)
                for mount in [w for w in words if w.startswith("--mount=type=bind")]:
                    options = dict(part.split("=", 1) for part in mount.removeprefix("--mount=").split(","))
                    source = options["source"]
                    shutil.copy2(self.project / source, self.app / source)
                command = re.sub(r"--mount=\S+\s+", "", rest)
                run(["bash", "-c", self.translate(command)], self.app, env=env, timeout=900)

    def copy_context(self) -> None:
        patterns = dockerignore_patterns(self.project)
        for path in sorted(self.project.rglob("*")):
            relative = path.relative_to(self.project).as_posix()
            if path.is_file() and not is_ignored(relative, patterns):
                target = self.app / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)

    def runtime_env(self, extra: dict[str, str]) -> dict[str, str]:
        return project_env({**self.stage_env(self.runtime_stage), **extra})

    def cmd(self) -> list[str]:
        return json.loads(dict(self.runtime_stage)["CMD"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET without following redirects: (status, headers, body)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


# Plays Cloud Tasks and Cloud Run's front end for the replayed image, with the generated project's
# own fakes (so it runs on the project's venv, next to the image's code): the gRPC fake of Cloud
# Tasks receives the CreateTask of an enqueue made exactly as the service's settings say, and its
# push, carrying an ID token of the test OIDC issuer, is delivered to gunicorn. First line out:
# the fakes' addresses; then it waits for gunicorn's port on stdin; last line out: the results.
PUSH_DRIVER = """
import json, os, sys
from urllib.parse import urlsplit

import django
import requests

from tests.fakes.google_services import GoogleServicesFake
from tests.fakes.oidc_issuer import OidcIssuer, strip_signature

issuer = OidcIssuer()
issuer.start()
google = GoogleServicesFake(issuer)
google.start()
os.environ.update(TASKS_GOOGLE_API_ENDPOINT=google.endpoint, TASKS_OIDC_CERTS_URL=issuer.certs_url)
print(json.dumps({key: os.environ[key] for key in ["TASKS_GOOGLE_API_ENDPOINT", "TASKS_OIDC_CERTS_URL"]}))
sys.stdout.flush()
port = int(sys.stdin.readline())

django.setup()
from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string

options = settings.TASKS["default"]["OPTIONS"]
queue = options["queue_aliases"]["default"]
google.add_queue(f"projects/{options['project_id']}/locations/{options['location']}/queues/{queue}")
task = import_string(sys.argv[1])
results = {}
# "signed": the token as Google signs it. "forwarded": as a private Cloud Run service hands it to
# the container once it has checked it itself, signature replaced.
for delivery in ["signed", "forwarded"]:
    with transaction.atomic():
        result = task.enqueue(7)
    from django_tasks_google.models import TaskExecution

    push = google.task_push(TaskExecution.objects.get(pk=result.id).cloud_task_name)
    headers = dict(push.headers)
    if delivery == "forwarded":
        headers["Authorization"] = "Bearer " + strip_signature(headers["Authorization"].split(" ", 1)[1])
    url = urlsplit(push.url)
    headers.update({"Host": url.netloc, "X-Forwarded-Proto": url.scheme})
    container = f"http://127.0.0.1:{port}{url.path}"
    response = requests.post(container, data=push.body, headers=headers, timeout=60, allow_redirects=False)
    result.refresh()
    results[delivery] = {
        "url": push.url,
        "http_status": response.status_code,
        "task_status": str(result.status),
        "return_value": result.return_value,
    }
print(json.dumps(results))
"""


@pytest.fixture
def processes() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start background processes (text pipes); each is killed at the end if still running."""
    started: list[subprocess.Popen[str]] = []

    def start(argv: list[str], cwd: Path, env: dict[str, str], **pipes: Any) -> subprocess.Popen[str]:
        process = subprocess.Popen(argv, cwd=cwd, env=env, text=True, **pipes)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def wait_until_serving(base_url: str, process: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited with {process.returncode}:\n{process.stdout.read()}")  # type: ignore[union-attr]
        try:
            http_get(f"{base_url}/healthz")
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"gunicorn did not answer within {timeout}s")


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["postgres-all", "sqlite-tasks"])
def test_replayed_image_serves_requests_and_runs_pushed_tasks(
    variant: str,
    synced_project: Callable[[str], Path],
    request: pytest.FixtureRequest,
    tmp_path: Path,
    processes: Callable[..., subprocess.Popen[str]],
) -> None:
    project = synced_project(variant)
    image = ReplayedImage(project, tmp_path)
    image.build()
    assert (image.app / "staticfiles" / "staticfiles.json").is_file(), "collected with the manifest storage"
    distributions = (image.app / ".venv").glob("lib/python*/site-packages/*.dist-info")
    installed = {path.name.split("-")[0].lower() for path in distributions}
    assert {"django", "gunicorn", "whitenoise"} <= installed
    assert not {"pytest", "ruff"} & installed, "--no-dev: no development tools in the image"

    database = variant_database(variant, request, "image")
    env = image.runtime_env(production_env(project, database))
    if VARIANTS[variant]["database"] == "postgres":
        # The migrate job: the build's --args, run in the image before the service starts.
        migrate = flags(
            next(step for step in load_build(project)["steps"] if step["id"] == "migrate")["args"]
        )
        run(migrate["args"].split(","), image.app, env=env, timeout=300)

    # The push driver runs on the project's venv (the fakes need its dev dependencies) with the
    # image's code and database first on the path.
    driver = processes(
        [project / ".venv" / "bin" / "python", "-c", PUSH_DRIVER, "acme_orders.tasks.send_notification"],
        tmp_path,
        {**env, "PYTHONPATH": f"{image.app}{os.pathsep}{project}", "PYTHONDONTWRITEBYTECODE": "1"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "driver.log").open("w"),
    )
    fakes = json.loads(driver.stdout.readline() or "null")  # type: ignore[union-attr]
    assert fakes, (tmp_path / "driver.log").read_text()

    # The service: the image's CMD with the deploy's environment. Only the certificates URL and the
    # API endpoint differ from production: they point at the fakes instead of Google.
    port = free_port()
    server = processes(
        image.cmd(),
        image.app,
        {**env, **fakes, "PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    wait_until_serving(base, server)
    host = SERVICE_URL.removeprefix("https://")
    https = {"Host": host, "X-Forwarded-Proto": "https"}

    # Health answers whatever the Host (probes do not send the service's), before host validation.
    status, _, body = http_get(f"{base}/healthz", {"Host": "10.1.2.3:8080"})
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    # Cloud Run's front end terminates TLS: plain HTTP is redirected, X-Forwarded-Proto https is served.
    status, headers, _ = http_get(f"{base}/admin/login/", {**https, "X-Forwarded-Proto": "http"})
    assert status == 301 and headers["Location"] == f"https://{host}/admin/login/"
    status, headers, body = http_get(f"{base}/admin/login/", https)
    assert status == 200
    assert "max-age=" in headers["Strict-Transport-Security"]
    stylesheet = re.search(rb'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', body)
    assert stylesheet, "templates link the hashed static files collected at build time"
    status, headers, _ = http_get(f"{base}{stylesheet.group(1).decode()}", https)
    assert status == 200 and "immutable" in headers.get("Cache-Control", ""), "served by WhiteNoise"
    # A host that is not the service's is refused.
    status, _, _ = http_get(f"{base}/admin/login/", {**https, "Host": "evil.example.com"})
    assert status == 400

    # Cloud Tasks pushes: a task enqueued as the service would, delivered to gunicorn, runs.
    driver.stdin.write(f"{port}\n")  # type: ignore[union-attr]
    driver.stdin.flush()  # type: ignore[union-attr]
    results = json.loads(driver.stdout.readline() or "null")  # type: ignore[union-attr]
    assert results, (tmp_path / "driver.log").read_text()
    expected = {"url": f"{SERVICE_URL}/tasks/execute/", "http_status": 204, "task_status": "SUCCESSFUL"}
    for delivery, outcome in results.items():
        assert {key: outcome[key] for key in expected} == expected, (delivery, outcome)
        assert outcome["return_value"] == {"user_id": 7, "status": "sent"}
    assert driver.wait(timeout=60) == 0

    # Cloud Run stops an instance with SIGTERM: gunicorn drains and exits cleanly.
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=60) == 0
    log = server.stdout.read()  # type: ignore[union-attr]
    assert "Using worker: gthread" in log
    assert re.search(r'"GET /healthz HTTP/1.1" 200 \d+ \d+ms', log), "access log on stdout"
    assert len(re.findall(r'"POST /tasks/execute/ HTTP/1.1" 204', log)) == 2
