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
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ..conftest import VARIANTS, Render, run, uv
from .support import (
    BUILD_SA_EXAMPLE,
    PUSH_DRIVER,
    SERVICE_URL,
    Bootstrap,
    ReplayedImage,
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


@pytest.mark.slow
def test_production_settings_pass_check_deploy(
    variant: str, synced_project: Callable[[str], Path], request: pytest.FixtureRequest
) -> None:
    project = synced_project(variant)
    env = {**production_env(project, variant_database(variant, request, "check")), "DJANGO_DEBUG": "false"}
    check = ["check", "--deploy", "--fail-level", "WARNING"]
    result = uv(project, "run", "--locked", "python", "manage.py", *check, env=env)
    assert "System check identified no issues" in result.stdout


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
