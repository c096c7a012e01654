"""Shared constants and helpers of the deployment tests (see the test modules for what each checks)."""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ..conftest import UV, VARIANTS, database_url, project_env, run
from ..test_render import matrix

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


# The one case test_bootstrap_gcloud.py runs through the real gcloud: PostgreSQL with every backend,
# whose bootstrap runs every command any case's bootstrap runs (test_bootstrap.py checks it).
GCLOUD_CASE = next(
    key for key in CASES if key.startswith("postgres-cloud_tasks+cloud_run_jobs+cloud_scheduler-py")
)

# Words of a gcloud call that name this project's resources, accounts or APIs.
_RESOURCE_WORD = re.compile(r"acme|@|googleapis\.com|^gs://")


def command_shape(call: list[str]) -> tuple[str, ...]:
    """A gcloud call without the names of what it acts on: its command words, then its flag names."""
    words = [word for word in call if not word.startswith("-") and not _RESOURCE_WORD.search(word)]
    return (*words, *sorted(flags(call)))


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


def backend_default_command(dst: Path) -> list[str]:
    """DEFAULT_COMMAND of the vendored CloudRunJobsBackend, read without importing Django."""
    for module in sorted((dst / "django_tasks_google" / "backends").glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
            if any(isinstance(target, ast.Name) and target.id == "DEFAULT_COMMAND" for target in targets):
                return list(ast.literal_eval(node.value))  # type: ignore[arg-type]
    raise AssertionError("DEFAULT_COMMAND not found in django_tasks_google/backends/")


def env_vars(value: str) -> dict[str, str]:
    """gcloud's `^DELIM^K=V<DELIM>K=V` custom-delimiter syntax (or plain commas) as a dict."""
    delimiter = ","
    if value.startswith("^"):
        delimiter, value = value[1:].split("^", 1)
    return dict(item.split("=", 1) for item in value.split(delimiter))


def duration_seconds(value: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(number) * units[unit] for number, unit in re.findall(r"(\d+)([smh])", value))


# A stand-in for gcloud: records each call (arguments separated by \x1f, one call per line) and the
# stdin of `secrets create`; `describe` finds a resource only when FAKE_GCLOUD_EXISTING=all. It
# answers nothing else: test_bootstrap_gcloud.py runs the real gcloud, whose output the script reads.
FAKE_GCLOUD = r"""#!/usr/bin/env bash
(IFS=$'\x1f'; printf '%s\n' "$*") >> "$FAKE_GCLOUD_LOG"
case "$*" in
  *" describe "*) [[ $FAKE_GCLOUD_EXISTING == all ]] || { echo "NOT_FOUND" >&2; exit 1; } ;;
  "secrets create "*) { cat; echo; } >> "$FAKE_GCLOUD_STDIN" ;;
esac
exit 0
"""


# What the bootstrap must do for each feature, and must not do without it (IAM: bootstrap_iam.py).
BOOTSTRAP_FEATURES: dict[str, list[str]] = {
    "postgres": [
        "gcloud sql instances create acme-orders-db --database-version=POSTGRES_17",
        "gcloud sql databases create acme_orders --instance=acme-orders-db",
        "gcloud secrets create acme-orders-database-url",
        "gcloud secrets create acme-orders-push-secret",
        "sqladmin.googleapis.com",
        "cloudscheduler.googleapis.com",
        "gcloud run jobs create acme-orders-migrate --region=us-central1",
        "gcloud run jobs create acme-orders-recover --region=us-central1",
        "gcloud run jobs create acme-orders-prune --region=us-central1",
        "gcloud scheduler jobs create http acme-orders-recover --location=us-central1 "
        "'--schedule=*/5 * * * *'",
        "gcloud scheduler jobs create http acme-orders-prune --location=us-central1",
        "gcloud iam service-accounts create acme-orders-cron",
    ],
    "cloud_tasks": [
        "gcloud tasks queues create acme-orders-default --location=us-central1 --max-attempts=",
        "cloudtasks.googleapis.com",
    ],
    "cloud_run_jobs": ["gcloud run jobs create acme-orders-tasks --region=us-central1"],
    "cloud_scheduler": [
        "gcloud iam roles create acme_orders_schedules --project=acme-test-123",
        "gcloud run jobs create acme-orders-sync-schedules --region=us-central1",
    ],
    # Pushes (Cloud Tasks or Cloud Scheduler) need the invoker identity.
    "pushes": ["gcloud iam service-accounts create acme-orders-invoker"],
}


BOOTSTRAP_ALWAYS = [
    "gcloud services enable run.googleapis.com cloudbuild.googleapis.com artifactregistry.googleapis.com",
    "gcloud artifacts repositories create acme-orders --repository-format=docker --location=us-central1",
    "gcloud storage buckets create gs://acme-test-123_cloudbuild",
    "gcloud iam service-accounts create acme-orders-run",
    "gcloud iam service-accounts create acme-orders-build",
    "gcloud run deploy acme-orders --region=us-central1 --image=us-docker.pkg.dev/cloudrun/container/hello",
    "gcloud secrets create acme-orders-secret-key",
]


def features(answers: dict[str, Any]) -> set[str]:
    """What the deploy of these answers uses: a SQLite project deploys as one container, no backends."""
    if answers["database"] != "postgres":
        return set()
    chosen = {"postgres", *answers["google_backends"]}
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


def resolved_substitutions(build: dict[str, Any]) -> dict[str, str]:
    """The build's substitutions with references resolved, as Cloud Build's dynamic substitution does."""
    values = {"PROJECT_ID": PROJECT_ID, "PROJECT_NUMBER": PROJECT_NUMBER, "BUILD_ID": "1", "LOCATION": REGION}
    values.update({name: str(value) for name, value in build["substitutions"].items()})
    for _ in range(len(values)):
        values = {name: substitute(value, values) for name, value in values.items()}
    return values


def substitute(value: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda match: values[match.group(1)], value)


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


class ReplayedImage:
    def __init__(self, project: Path, root: Path) -> None:
        self.project = project
        self.app = root / "app"
        self.build_stage, self.runtime_stage = dockerfile_stages((project / "Dockerfile").read_text())
        self.python = (project / ".venv" / "bin" / "python").resolve()
        version = re.search(r"^FROM python:(\d+\.\d+)-", (project / "Dockerfile").read_text(), re.M)
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


def http_post(url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """POST a form without following redirects: (status, headers, body)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    body = urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(
        url, data=body, headers={**headers, "Content-Type": "application/x-www-form-urlencoded"}
    )
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


# What `gcloud run services proxy SERVICE --port=8080` does to a browser's request: it sends it to
# the service with the service's Host (Cloud Run's front end adds X-Forwarded-Proto: https) and
# leaves the browser's Origin and Referer as they are: http://localhost:8080. Source:
# https://github.com/GoogleCloudPlatform/cloud-run-proxy (main.go, buildProxy), which gcloud runs.
PROXY_ORIGIN = "http://localhost:8080"


def admin_login_through_proxy(base_url: str, host: str, origin: str, password: str) -> int:
    """Log in to the admin as a browser behind the local proxy would; the POST's status."""
    https = {"Host": host, "X-Forwarded-Proto": "https"}
    status, headers, body = http_get(f"{base_url}/admin/login/?next=/admin/", https)
    assert status == 200, status
    cookie = re.search(r"csrftoken=([^;]+)", headers["Set-Cookie"])
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body)
    assert cookie and token, "the login form carries a CSRF token and cookie"
    form = {
        "csrfmiddlewaretoken": token.group(1).decode(),
        "username": "admin",
        "password": password,
        "next": "/admin/",
    }
    browser = {
        "Origin": origin,
        "Referer": f"{origin}/admin/login/",
        "Cookie": f"csrftoken={cookie.group(1)}",
    }
    status, headers, _ = http_post(f"{base_url}/admin/login/?next=/admin/", form, {**https, **browser})
    if status == 302:
        assert headers["Location"] == "/admin/", headers["Location"]
    return status


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


# Enqueues a task on the SQLite service's own database, as its code would, and waits for the task
# worker that runs in the same container to finish it. Last line out: the result.
LOCAL_TASK_DRIVER = """
import json, sys, time

import django

django.setup()
from django.utils.module_loading import import_string

result = import_string(sys.argv[1]).enqueue(7)
deadline = time.monotonic() + 120
while not result.is_finished and time.monotonic() < deadline:
    time.sleep(0.3)
    result.refresh()
print(json.dumps({"task_status": str(result.status), "return_value": result.return_value}))
"""


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
