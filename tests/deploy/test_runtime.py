"""Slow tier: the real gcloud, without credentials, parses every command of the deploy files;
production settings pass `check --deploy`; and the Dockerfile's steps are replayed without Docker
(lock-only dependency layer, collectstatic, the migrate job, the image's CMD under the deploy's
environment), then real HTTP requests and Cloud Tasks pushes (through the generated project's
gRPC fake and test OIDC issuer) are sent to it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ..conftest import VARIANTS, Render, project_env, run, uv
from .support import (
    BUILD_SA_EXAMPLE,
    LOCAL_TASK_DRIVER,
    PROXY_ORIGIN,
    PUSH_DRIVER,
    SERVICE_URL,
    Bootstrap,
    ReplayedImage,
    admin_login_through_proxy,
    flags,
    free_port,
    gcloud_env,
    gcloud_parses,
    gcloud_steps,
    http_get,
    load_build,
    production_env,
    readme_gcloud_commands,
    resolved_substitutions,
    substitute,
    variant_database,
    wait_until_serving,
)


@pytest.mark.slow
def test_gcloud_accepts_every_command(render: Render, tmp_path: Path) -> None:
    """Every gcloud command of cloudbuild.yaml, the bootstrap and the README, parsed by the real gcloud."""
    if shutil.which("gcloud") is None:
        pytest.skip("the Google Cloud CLI (gcloud) is not installed")
    dst = render(tmp_path / "service", **VARIANTS["postgres-all"])
    commands = []
    # The PostgreSQL build (every job) and the SQLite one (its single-container service flags).
    for project in [dst, render(tmp_path / "sqlite", **VARIANTS["sqlite-tasks"])]:
        build = load_build(project)
        values = resolved_substitutions(build)
        commands += [[substitute(arg, values) for arg in step["args"]] for step in gcloud_steps(build)]
    deployed = {argv[3] if argv[1] == "jobs" else argv[2] for argv in commands if "deploy" in argv[:3]}
    assert {f"acme-orders{suffix}" for suffix in ["", "-migrate", "-tasks", "-recover", "-prune"]} <= deployed
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


@pytest.mark.slow
def test_production_settings_pass_check_deploy(
    variant: str, synced_project: Callable[[str], Path], request: pytest.FixtureRequest
) -> None:
    project = synced_project(variant)
    env = {**production_env(project, variant_database(variant, request, "check")), "DJANGO_DEBUG": "false"}
    check = ["check", "--deploy", "--fail-level", "WARNING"]
    result = uv(project, "run", "--locked", "python", "manage.py", *check, env=env)
    assert "System check identified no issues" in result.stdout


def settings_outcome(project: Path, env: dict[str, str]) -> str:
    """`DEBUG=<value>` if config.settings loads under `env` alone (no .env), else its error."""
    code = "import django; django.setup(); from django.conf import settings; print(f'DEBUG={settings.DEBUG}')"
    clean = {k: v for k, v in project_env().items() if not k.startswith(("DJANGO_", "K_", "CLOUD_RUN_"))}
    result = subprocess.run(
        [project / ".venv" / "bin" / "python", "-c", code],
        cwd=project,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_settings_default_to_production_and_refuse_weak_keys(synced_project: Callable[[str], Path]) -> None:
    """Finding 3: no DEBUG unless asked, no public key outside Cloud Run, no weak key on it."""
    project = synced_project("sqlite-tasks")
    strong = "k" + secrets.token_urlsafe(50)
    # `env -i ... manage.py` or `docker run IMAGE`: no debug mode, and no silent fallback key.
    missing = settings_outcome(project, {})
    assert "DJANGO_SECRET_KEY is not set" in missing and "DJANGO_DEBUG=true" in missing
    assert settings_outcome(project, {"DJANGO_SECRET_KEY": "x"}) == "DEBUG=False"
    assert settings_outcome(project, {"DJANGO_DEBUG": "true"}) == "DEBUG=True"
    # The copied project's .env asks for development mode; manage.py reads it.
    local = uv(project, "run", "--locked", "python", "manage.py", "shell", "-c", "print(settings.DEBUG)")
    assert local.stdout.strip().splitlines()[-1] == "True"
    # On Cloud Run (service or job), a missing, short or django-insecure key refuses to start.
    for cloud_run in [{"K_SERVICE": "acme-orders"}, {"CLOUD_RUN_JOB": "acme-orders-migrate"}]:
        for key in ["", "x" * 49, "django-insecure-" + "a1b2c3d4e5" * 5, "ab" * 30]:
            outcome = settings_outcome(project, {**cloud_run, "DJANGO_SECRET_KEY": key})
            assert "DJANGO_SECRET_KEY" in outcome and "gcloud secrets versions add" in outcome, (key, outcome)
        assert settings_outcome(project, {**cloud_run, "DJANGO_SECRET_KEY": strong}) == "DEBUG=False"


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["postgres-all", "sqlite-tasks"])
def test_replayed_image_serves_requests_and_runs_tasks(
    variant: str,
    synced_project: Callable[[str], Path],
    request: pytest.FixtureRequest,
    tmp_path: Path,
    processes: Callable[..., subprocess.Popen[str]],
) -> None:
    """PostgreSQL: the service runs tasks Cloud Tasks pushes. SQLite: one container runs gunicorn
    and the local worker, which runs a task enqueued on its database (defect 13)."""
    postgres = VARIANTS[variant]["database"] == "postgres"
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
    if postgres:
        # The migrate job: the build's --args, run in the image before the service starts.
        migrate = flags(
            next(step for step in load_build(project)["steps"] if step["id"] == "migrate")["args"]
        )
        run(migrate["args"].split(","), image.app, env=env, timeout=300)
    # An administrator, as `createsuperuser` would make one (on SQLite, in the image's database).
    password = secrets.token_urlsafe(16)
    run(
        ["python", "manage.py", "createsuperuser", "--noinput", "--username=admin", "--email=a@example.com"],
        image.app,
        env={**env, "DJANGO_SUPERUSER_PASSWORD": password},
        timeout=120,
    )

    fakes: dict[str, str] = {}
    if postgres:
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
    # The startup probe's path (cloudbuild.yaml): ready once the database answers.
    deploy = flags(next(step for step in load_build(project)["steps"] if step["id"] == "deploy")["args"])
    probe = dict(item.split("=", 1) for item in deploy["startup-probe"].split(","))
    status, _, _ = http_get(f"{base}{probe['httpGet.path']}", {"Host": "10.1.2.3:8080"})
    assert status == 200
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
    # The admin through `gcloud run services proxy --port=8080` (finding 4): the login POST carries
    # the browser's origin, http://localhost:8080, and succeeds; another origin is still refused.
    assert admin_login_through_proxy(base, host, PROXY_ORIGIN, password) == 302
    assert admin_login_through_proxy(base, host, "https://evil.example.com", password) == 403

    if postgres:
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
    else:
        # SQLite: a task enqueued on the container's database is run by the worker beside gunicorn.
        enqueue = run(
            ["python", "-c", LOCAL_TASK_DRIVER, "acme_orders.tasks.send_notification"],
            image.app,
            env={**env, "PYTHONPATH": str(image.app)},
            timeout=300,
        )
        outcome = json.loads(enqueue.stdout.strip().splitlines()[-1])
        assert outcome == {"task_status": "SUCCESSFUL", "return_value": {"user_id": 7, "status": "sent"}}

    # Cloud Run stops an instance with SIGTERM: gunicorn (and the SQLite worker) drain and exit cleanly.
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=60) == 0
    log = server.stdout.read()  # type: ignore[union-attr]
    # On Cloud Run gunicorn logs one JSON entry per line (severity for Cloud Logging) and no access
    # log: Cloud Run's own request log has every request.
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any("Using worker: gthread" in entry["message"] for entry in entries), log
    assert all("severity" in entry for entry in entries)
    assert "GET /healthz" not in log


@pytest.mark.slow
def test_single_container_stops_when_its_worker_dies(
    synced_project: Callable[[str], Path], tmp_path: Path, processes: Callable[..., subprocess.Popen[str]]
) -> None:
    """SQLite: a web server without its task worker would accept tasks nobody runs. When the worker
    dies the container stops (Cloud Run then replaces it) instead of serving on."""
    project = synced_project("sqlite-tasks")
    image = ReplayedImage(project, tmp_path)
    image.build()
    port = free_port()
    server = processes(
        image.cmd(),
        image.app,
        {**image.runtime_env(production_env(project, None)), "PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    wait_until_serving(f"http://127.0.0.1:{port}", server)
    started = child_processes(server.pid)
    web = next(pid for pid, argv in started.items() if "gunicorn" in " ".join(argv))
    worker = next(pid for pid, argv in started.items() if "run_tasks" in argv)
    os.kill(worker, signal.SIGKILL)
    assert server.wait(timeout=60) != 0
    assert "The task worker exited" in server.stdout.read()  # type: ignore[union-attr]
    assert not Path(f"/proc/{web}").exists(), "the web server was stopped with it"


def child_processes(pid: int) -> dict[int, list[str]]:
    """The direct children of `pid` and their command lines, from /proc (Linux)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                argv = (stat.parent / "cmdline").read_bytes().decode().split("\0")
                children[int(stat.parent.name)] = argv
        except (OSError, IndexError):
            continue
    return children
