"""Measured inside one subject's interpreter (see ../compare.py): the push path and its floor.

`POST /tasks/execute/` with a real RS256 ID token from the local OIDC issuer (the rendered
service's tests/fakes/oidc_issuer.py, loaded from its file), verified by each subject's own code,
for a no-op task; and `POST /bare/`, a view that does one INSERT, behind the same Django stack.
Both in-process (Django's test client, ms per request) and under `gunicorn -w 2` (requests per
second from a few client threads, a new connection per request as gunicorn's sync workers want).

* ours: the task is enqueued on a CloudTasksBackend alias whose client talks to the gRPC fake
  (tests/fakes/google_services.py); the push is the request that fake rebuilds for the created
  task, the way Cloud Tasks would send it.
* published: 0.6.0's CloudTasksBackend cannot be pointed at a fake, so the row is enqueued on its
  ProcessBackend and handed to the push alias; the request carries what 0.6.0's view reads (the
  form body, X-CloudTasks-TaskRetryCount, the token). Its verifier fetches Google's certificates
  URL, which settings_published.py points at the local issuer.
* dbtasks: no push endpoint; only the bare view is measured, as a second floor.

The issuer (and the fake) must run before Django is set up: their URLs are settings. Prints one
JSON line.
"""

# ruff: noqa: E402

import argparse
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from http.client import HTTPConnection
from pathlib import Path

AUDIENCE = "https://bench.example.com"
INVOKER = "invoker@bench.iam.gserviceaccount.com"
QUEUE = "projects/bench-project/locations/us-central1/queues/bench-default"
WARM_UP = 10


def load(name: str, path: Path) -> object:
    """A module from a file, without putting its project on sys.path (its app would shadow ours)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


parser = argparse.ArgumentParser()
parser.add_argument("--subject", choices=["ours", "published", "dbtasks"], required=True)
parser.add_argument("--fakes", type=Path, required=True, help="the rendered service's tests/fakes")
parser.add_argument("--requests", type=int, required=True, help="in-process requests per endpoint")
parser.add_argument("--seconds", type=float, required=True, help="load per endpoint under gunicorn")
parser.add_argument("--clients", type=int, default=4)
args = parser.parse_args()

issuer = None  # db-tasks has no push endpoint (and no google-auth to mint tokens with)
if args.subject != "dbtasks":
    issuer = load("bench_oidc_issuer", args.fakes / "oidc_issuer.py").OidcIssuer()  # type: ignore[attr-defined]
    issuer.start()
    os.environ["BENCH_CERTS_URL"] = issuer.certs_url
fake = None
if args.subject == "ours":
    from tests.fakes.google_services import GoogleServicesFake  # the service's own test fakes

    fake = GoogleServicesFake(issuer=issuer)
    os.environ["BENCH_API_ENDPOINT"] = fake.start()
    fake.add_queue(QUEUE, max_attempts=3)

import django

django.setup()

import bench_tasks
from django.db import transaction
from django.test import Client

Request = tuple[str, bytes, dict[str, str]]  # path, body, headers


def pushes(count: int) -> list[Request]:
    """`count` pushes of fresh no-op tasks, as each subject's execute view expects them."""
    if args.subject == "ours":
        from django_tasks_google.models import TaskExecution

        requests = []
        for _ in range(count):
            with transaction.atomic():  # the CreateTask runs on commit
                result = bench_tasks.noop.using(backend="push").enqueue()
            push = fake.task_push(TaskExecution.objects.get(pk=result.id).cloud_task_name)  # type: ignore[union-attr]
            requests.append((urllib.parse.urlsplit(push.url).path, push.body, dict(push.headers)))
        return requests
    from django_tasks_google.models import TaskExecution

    ids = [bench_tasks.noop.enqueue().id for _ in range(count)]
    TaskExecution.objects.filter(pk__in=ids).update(backend_alias="push")
    return [
        (
            "/tasks/execute/",
            urllib.parse.urlencode({"execution_id": execution_id, "backend": "push"}).encode(),
            {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-CloudTasks-TaskRetryCount": "0",
                "Authorization": f"Bearer {issuer.mint(AUDIENCE, INVOKER)}",  # type: ignore[union-attr]
            },
        )
        for execution_id in ids
    ]


def bare(count: int) -> list[Request]:
    return [("/bare/", b'{"bench": "bare"}', {"Content-Type": "application/json"})] * count


def in_process(requests: list[Request]) -> float:
    """Median ms per request through Django's test client (the whole stack, no HTTP server)."""
    client = Client(HTTP_HOST="bench.example.com")
    durations = []
    for path, body, headers in requests:
        headers = dict(headers)
        content_type = headers.pop("Content-Type", "application/octet-stream")
        started = time.perf_counter()
        response = client.post(path, data=body, content_type=content_type, headers=headers, secure=True)
        durations.append(time.perf_counter() - started)
        if response.status_code != 204:
            sys.exit(f"{args.subject}: {path} answered {response.status_code}")
    return 1000 * statistics.median(durations[WARM_UP:])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def under_gunicorn(make: object, seconds: float) -> float:
    """Requests per second served by `gunicorn -w 2`, from client threads in this process."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "django.core.wsgi:get_wsgi_application()",
        ],
        cwd=Path(bench_tasks.__file__).parent,  # not the service's directory: its gunicorn.conf.py
        start_new_session=True,  # would change the worker class, threads and access log for ours
    )
    try:
        deadline = time.monotonic() + 120
        while True:  # up once both workers answer
            try:
                for _ in range(4):
                    send(port, bare(1)[0])
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    sys.exit(f"{args.subject}: gunicorn did not start")
                time.sleep(0.2)
        requests = make()  # type: ignore[operator]
        for request in requests[:WARM_UP]:
            send(port, request)
        queue = iter(requests[WARM_UP:])
        lock = threading.Lock()
        served = [0]
        stop_at = time.monotonic() + seconds

        def client() -> None:
            while time.monotonic() < stop_at:
                with lock:
                    request = next(queue, None)
                if request is None:
                    return
                send(port, request)
                with lock:
                    served[0] += 1

        started = time.monotonic()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return served[0] / (time.monotonic() - started)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()


def send(port: int, request: Request) -> None:
    path, body, headers = request
    connection = HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            "POST",
            path,
            body=body,
            headers={**headers, "Host": "bench.example.com", "X-Forwarded-Proto": "https"},
        )
        response = connection.getresponse()
        response.read()
        if response.status != 204:
            sys.exit(f"{args.subject}: {path} answered {response.status} under gunicorn")
    finally:
        connection.close()


# Enough pushes for the load: the fastest run seen served ~250 pushes/s.
load_count = WARM_UP + int(400 * args.seconds)
results: dict[str, float] = {"bare_ms": in_process(bare(args.requests + WARM_UP))}
if args.subject != "dbtasks":
    results["execute_ms"] = in_process(pushes(args.requests + WARM_UP))
results["bare_rps"] = under_gunicorn(lambda: bare(100_000), args.seconds)
if args.subject != "dbtasks":
    results["execute_rps"] = under_gunicorn(lambda: pushes(load_count), args.seconds)
if issuer is not None:
    issuer.stop()
if fake is not None:
    fake.stop()
print(json.dumps(results))
