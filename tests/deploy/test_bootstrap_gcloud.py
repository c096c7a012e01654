"""deploy/bootstrap.sh run by the REAL gcloud CLI against a local stand-in of Google's REST APIs.

The script decides what to create from what gcloud answers, so here gcloud itself parses the
script's arguments and Google-shaped responses (see google_apis.py for how it is pointed at the
stand-in). Every gcloud start-up costs a second or more, so one case runs, with the fewest runs
that still reach every command the script has: PostgreSQL with every backend, whose first run
creates everything (about 70 gcloud runs) and whose second finds it all and updates what it updates
(about 50). A SQLite project's script is a subset of it (the same commands, fewer APIs to enable and
fewer resources). The per-combination rules (every case's commands and IAM grants) are checked,
fast, with a recording stand-in for gcloud in test_bootstrap.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .bootstrap_iam import BROAD_ROLES, PROJECT, expected_grants, grant_of_policy
from .google_apis import GoogleApis, gcloud_config, serving
from .support import GCLOUD_CASE, Rendered

pytestmark = [
    pytest.mark.slow,
    # One worker runs the module, so the run fixture (minutes of gcloud) is computed once.
    pytest.mark.xdist_group("bootstrap-gcloud"),
    pytest.mark.skipif(shutil.which("gcloud") is None, reason="the gcloud CLI is not installed"),
]


def _env(config_dir: Path, port: int) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CLOUDSDK_", "GOOGLE_"))
        and key.lower() not in {"http_proxy", "https_proxy", "all_proxy"}
    }
    for name in ["GCP_PROJECT_ID", "GCP_REGION", "SERVICE_NAME"]:
        env.pop(name, None)
    return {**env, **gcloud_config(config_dir, port, PROJECT)}


def _bootstrap(dst: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["deploy/bootstrap.sh", *args],
        cwd=dst,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )


def _first_run_then_rerun(dst: Path, workdir: Path) -> dict[str, Any]:
    with serving() as (apis, port):
        env = _env(workdir / "gcloud", port)
        dry = _bootstrap(dst, env, "--dry-run")
        dry_calls = list(apis.calls)
        first = _bootstrap(dst, env)
        first_calls, resources = list(apis.calls[len(dry_calls) :]), dict(apis.state.resources)
        policies = {key: list(map(dict, policy["bindings"])) for key, policy in apis.state.policies.items()}
        second = _bootstrap(dst, env)
        second_calls = apis.calls[len(dry_calls) + len(first_calls) :]
        return {
            "apis": apis,
            "dry": dry,
            "dry_calls": dry_calls,
            "first": first,
            "first_calls": first_calls,
            "resources_after_first": resources,
            "policies_after_first": policies,
            "second": second,
            "second_calls": second_calls,
        }


@pytest.fixture(scope="module")
def run(
    render_case: Callable[[str], Rendered], tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], dict[str, Any]]:
    dst, answers = render_case(GCLOUD_CASE)
    return _first_run_then_rerun(dst, tmp_path_factory.mktemp("gcloud")), answers


def _diagnose(result: subprocess.CompletedProcess[str], apis: GoogleApis) -> str:
    failed = [str(call) + f" {call.body}" for call in apis.calls if call.status >= 400 and call.status != 404]
    return f"exit {result.returncode}\n{result.stderr[-3000:]}\nrefused calls:\n" + "\n".join(failed)


def test_dry_run_calls_nothing(run: tuple[dict[str, Any], dict[str, Any]]) -> None:
    outcome, _ = run
    assert outcome["dry"].returncode == 0, outcome["dry"].stderr
    assert outcome["dry_calls"] == []


def test_first_run_grants_exactly_the_least_privilege(run: tuple[dict[str, Any], dict[str, Any]]) -> None:
    outcome, answers = run
    apis: GoogleApis = outcome["apis"]
    assert outcome["first"].returncode == 0, _diagnose(outcome["first"], apis)
    granted = {grant_of_policy(*binding) for binding in apis.state.bindings()}
    assert granted == expected_grants(answers)
    assert not [grant for grant in granted if grant[2] == "project" and grant[1] in BROAD_ROLES]


def test_first_run_creates_the_resources_cloudbuild_deploys_into(
    run: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    outcome, _ = run
    resources = outcome["resources_after_first"]
    assert "run:namespaces/acme-test-123/services/acme-orders" in resources
    for job in ["recover", "prune"]:
        assert f"run:namespaces/acme-test-123/jobs/acme-orders-{job}" in resources
    schedules = {key: value for key, value in resources.items() if key.startswith("cloudscheduler:")}
    recover = schedules[
        "cloudscheduler:projects/acme-test-123/locations/us-central1/jobs/acme-orders-recover"
    ]
    prune = schedules["cloudscheduler:projects/acme-test-123/locations/us-central1/jobs/acme-orders-prune"]
    assert recover["schedule"] == "*/5 * * * *"
    assert prune["schedule"].endswith(" * * *") and prune["timeZone"] == "Etc/UTC"
    for job, name in [(recover, "acme-orders-recover"), (prune, "acme-orders-prune")]:
        target = job["httpTarget"]
        # https://cloud.google.com/run/docs/execute/jobs-on-schedule : the Admin API's run method, OAuth.
        assert target["uri"] == (
            f"https://us-central1-run.googleapis.com/apis/run.googleapis.com/v1/namespaces/acme-test-123/jobs/{name}:run"
        )
        assert target["httpMethod"] == "POST"
        assert (
            target["oauthToken"]["serviceAccountEmail"]
            == "acme-orders-cron@acme-test-123.iam.gserviceaccount.com"
        )


def test_no_secret_is_printed_or_passed_in_a_url(run: tuple[dict[str, Any], dict[str, Any]]) -> None:
    outcome, _ = run
    apis: GoogleApis = outcome["apis"]
    values = apis.state.secret_values + apis.state.sql_passwords
    assert len(apis.state.secret_values) == 3  # secret key, push secret, database URL
    printed = "".join(outcome[key].stdout + outcome[key].stderr for key in ["first", "second"])
    for value in values:
        assert value not in printed
        assert not [call for call in apis.calls if value in call.path + str(call.query)]


def test_rerun_creates_nothing_and_changes_no_policy(run: tuple[dict[str, Any], dict[str, Any]]) -> None:
    outcome, _ = run
    apis: GoogleApis = outcome["apis"]
    assert outcome["second"].returncode == 0, _diagnose(outcome["second"], apis)
    assert apis.state.resources.keys() == outcome["resources_after_first"].keys()
    assert {key: policy["bindings"] for key, policy in apis.state.policies.items()} == outcome[
        "policies_after_first"
    ]
    creates = [
        str(call) for call in outcome["second_calls"] if call.method == "POST" and ":" not in call.path
    ]
    assert creates == []
