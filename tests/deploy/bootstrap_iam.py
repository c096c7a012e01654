"""What deploy/bootstrap.sh must grant for each answer combination, and the grants a run made.

One rule set serves both bootstrap test modules: the matrix run against a recording stand-in for the
gcloud command (grants read from its arguments) and the run of the real gcloud against the REST
stand-in (grants read from the IAM policies it holds).
"""

from __future__ import annotations

from typing import Any

SERVICE = "acme-orders"
PROJECT = "acme-test-123"

# A grant: (member, role, kind of resource, resource name).
Grant = tuple[str, str, str, str]


def account(name: str) -> str:
    return f"{SERVICE}-{name}@{PROJECT}.iam.gserviceaccount.com"


RUNTIME, BUILD, INVOKER, CRON = (account(name) for name in ["run", "build", "invoker", "cron"])


def expected_grants(answers: dict[str, Any]) -> set[Grant]:
    """The least privilege each feature needs (the README's IAM table says why for each line)."""
    postgres = answers["database"] == "postgres"
    backends = set(answers["google_backends"]) if postgres else set()
    run, build = f"serviceAccount:{RUNTIME}", f"serviceAccount:{BUILD}"
    grants: set[Grant] = {
        (build, "roles/logging.logWriter", "project", PROJECT),
        (build, "roles/storage.objectViewer", "bucket", f"{PROJECT}_cloudbuild"),
        (build, "roles/artifactregistry.writer", "repository", SERVICE),
        (build, "roles/run.admin", "run service", SERVICE),
        (build, "roles/iam.serviceAccountUser", "service account", RUNTIME),
        (run, "roles/secretmanager.secretAccessor", "secret", f"{SERVICE}-secret-key"),
    }
    if not postgres:
        return grants
    jobs = ["migrate", "recover", "prune"]
    jobs += ["tasks"] if "cloud_run_jobs" in backends else []
    jobs += ["sync-schedules"] if "cloud_scheduler" in backends else []
    grants |= {(build, "roles/run.developer", "run job", f"{SERVICE}-{job}") for job in jobs}
    grants |= {
        (run, "roles/secretmanager.secretAccessor", "secret", f"{SERVICE}-database-url"),
        (run, "roles/secretmanager.secretAccessor", "secret", f"{SERVICE}-push-secret"),
        (run, "roles/cloudsql.client", "project", PROJECT),
        (f"serviceAccount:{CRON}", "roles/run.invoker", "run job", f"{SERVICE}-recover"),
        (f"serviceAccount:{CRON}", "roles/run.invoker", "run job", f"{SERVICE}-prune"),
    }
    if "cloud_tasks" in backends:
        queue = f"{SERVICE}-default"
        grants |= {
            (run, "roles/cloudtasks.enqueuer", "queue", queue),
            (run, "roles/cloudtasks.viewer", "queue", queue),
        }
    if "cloud_run_jobs" in backends:
        grants.add((run, "roles/run.developer", "run job", f"{SERVICE}-tasks"))
    if "cloud_scheduler" in backends:
        role = f"projects/{PROJECT}/roles/{SERVICE.replace('-', '_')}_schedules"
        grants.add((run, role, "project", PROJECT))
    if {"cloud_tasks", "cloud_scheduler"} & backends:
        grants |= {
            (run, "roles/iam.serviceAccountUser", "service account", INVOKER),
            (f"serviceAccount:{INVOKER}", "roles/run.invoker", "run service", SERVICE),
        }
    return grants


# Roles that must never be granted on the whole project (finding 6 of issue 12).
BROAD_ROLES = {
    "roles/run.admin",
    "roles/run.developer",
    "roles/cloudbuild.builds.builder",
    "roles/iam.serviceAccountUser",
    "roles/cloudscheduler.admin",
}


# gcloud command group -> kind of resource, for the recorded arguments of add-iam-policy-binding.
_COMMAND_KINDS = {
    ("projects",): "project",
    ("iam", "service-accounts"): "service account",
    ("secrets",): "secret",
    ("artifacts", "repositories"): "repository",
    ("storage", "buckets"): "bucket",
    ("tasks", "queues"): "queue",
    ("run", "services"): "run service",
    ("run", "jobs"): "run job",
}


def grant_of_command(argv: list[str]) -> Grant:
    """The grant an `add-iam-policy-binding` command line asks for."""
    verb = argv.index("add-iam-policy-binding")
    kind = _COMMAND_KINDS[tuple(argv[:verb])]
    options = dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
    return options["member"], options["role"], kind, argv[verb + 1].removeprefix("gs://")


# The stand-in's policy keys: "<api>:<resource name>" -> kind of resource.
_POLICY_KINDS = {
    "cloudresourcemanager:projects": "project",
    "iam:serviceAccounts": "service account",
    "secretmanager:secrets": "secret",
    "artifactregistry:repositories": "repository",
    "storage:buckets": "bucket",
    "cloudtasks:queues": "queue",
    "run:services": "run service",
    "run:jobs": "run job",
}


def grant_of_policy(member: str, role: str, resource: str) -> Grant:
    """A binding the REST stand-in holds, in the same terms as `grant_of_command`."""
    api, name = resource.split(":", 1)
    parts = name.split("/")
    collection = parts[-2] if len(parts) > 2 else parts[0]
    return member, role, _POLICY_KINDS[f"{api}:{collection}"], parts[-1]
