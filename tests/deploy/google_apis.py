"""A recording stand-in of the Google REST APIs deploy/bootstrap.sh reaches through the real gcloud.

Why: the bootstrap reads gcloud's output (a describe's exit status decides whether to create), so a
stand-in for gcloud itself would only test the script against our idea of gcloud. Here the real CLI
parses the script's arguments, sends the real REST requests, and parses responses shaped as Google's
REST references document them; the stand-in keeps the state a project would (resources, IAM
policies), so a second run sees what the first created.

How gcloud is pointed here (see `gcloud_config`): `api_endpoint_overrides/<api>` set to plain-http
base URLs, an access token from `auth/access_token_file`, and gcloud's own proxy setting pointing at
this server. The proxy is needed for Cloud Run only: gcloud derives its regional endpoint by putting
the region in front of the override's host name (`us-central1-` + host), which leaves no host that
resolves locally; as a proxy, this server receives the absolute URL and needs no name resolution.
Every API goes through the same path so that none reaches the network.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

# The APIs the bootstrap uses, by gcloud's name for them (the api_endpoint_overrides property).
APIS = [
    "artifactregistry",
    "cloudresourcemanager",
    "cloudscheduler",
    "cloudtasks",
    "iam",
    "run",
    "secretmanager",
    "serviceusage",
    "sql",
    "storage",
]

PROJECT_NUMBER = "123456789012"


@dataclass
class Call:
    """One request as the stand-in received it."""

    method: str
    api: str
    path: str
    query: dict[str, str]
    body: Any
    status: int = 0

    def __str__(self) -> str:
        return f"{self.method} {self.api} /{self.path} -> {self.status}"


class Error(Exception):
    """A Google API error: the JSON body of https://cloud.google.com/apis/design/errors#http_mapping."""

    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code, self.status, self.message = code, status, message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}


def not_found(what: str) -> Error:
    return Error(404, "NOT_FOUND", f"{what} was not found")


@dataclass
class State:
    """What the fake project holds: resources by IAM-style name, IAM policies by the same names."""

    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)
    enabled: set[str] = field(default_factory=set)
    secret_values: list[str] = field(default_factory=list)
    sql_passwords: list[str] = field(default_factory=list)

    def bindings(self) -> set[tuple[str, str, str]]:
        """Every (member, role, resource) the IAM policies hold."""
        return {
            (member, binding["role"], resource)
            for resource, policy in self.policies.items()
            for binding in policy.get("bindings", [])
            for member in binding.get("members", [])
        }


def _operation(name: str, response: dict[str, Any], type_url: str) -> dict[str, Any]:
    """A finished google.longrunning.Operation (https://google.aip.dev/151)."""
    return {"name": name, "done": True, "response": {"@type": type_url, **response}}


def _sql_operation(project: str, kind: str, target: str) -> dict[str, Any]:
    """A finished Cloud SQL Admin operation (sqladmin v1beta4 `Operation`, status DONE)."""
    name = str(uuid.uuid4())
    return {
        "kind": "sql#operation",
        "name": name,
        "status": "DONE",
        "operationType": kind,
        "targetId": target,
        "targetProject": project,
        "selfLink": f"https://sqladmin.googleapis.com/sql/v1beta4/projects/{project}/operations/{name}",
    }


class GoogleApis:
    """The routes of the stand-in. Each handler gets the regex match, the query and the JSON body."""

    def __init__(self) -> None:
        self.state = State()
        self.calls: list[Call] = []
        self.lock = threading.Lock()
        self.sql_operations: dict[str, dict[str, Any]] = {}
        self.api = self.method = ""
        r = self._route
        self.routes: list[tuple[str, str, re.Pattern[str], Callable[..., Any]]] = [
            # Service Usage: https://cloud.google.com/service-usage/docs/reference/rest
            r("serviceusage", "POST", r"v1/projects/([^/]+)/services:batchEnable", self.batch_enable),
            r("serviceusage", "GET", r"v1/projects/([^/]+)/services/([^/:]+)", self.service_state),
            # Resource Manager: projects.getIamPolicy / setIamPolicy (v1 and v3 paths)
            r("cloudresourcemanager", "POST", r"v[13]/(projects/[^/:]+):(get|set)IamPolicy", self.iam_policy),
            r("cloudresourcemanager", "GET", r"v[13]/projects/([^/:]+)", self.project),
            # IAM: service accounts and custom roles
            r("iam", "GET", r"v1/projects/[^/]+/serviceAccounts/([^/:]+)", self.get_service_account),
            r("iam", "POST", r"v1/projects/([^/]+)/serviceAccounts", self.create_service_account),
            r(
                "iam",
                "POST",
                r"v1/projects/[^/]+/serviceAccounts/([^/:]+):(get|set)IamPolicy",
                self.sa_policy,
            ),
            r("iam", "GET", r"v1/(projects/[^/]+/roles/[^/:]+)", self.get),
            r("iam", "POST", r"v1/(projects/[^/]+)/roles", self.create_role),
            r("iam", "POST", r"v1/permissions:queryTestablePermissions", self.testable_permissions),
            r("iam", "PATCH", r"v1/(projects/[^/]+/roles/[^/:]+)", self.update),
            # Artifact Registry
            r(
                "artifactregistry",
                "GET",
                r"v1/(projects/[^/]+/locations/[^/]+/repositories/[^/:]+)",
                self.get,
            ),
            r(
                "artifactregistry",
                "POST",
                r"v1/(projects/[^/]+/locations/[^/]+)/repositories",
                self.create_repo,
            ),
            r(
                "artifactregistry",
                "(GET|POST)",
                r"v1/(projects/[^/]+/locations/[^/]+/repositories/[^/:]+):(get|set)IamPolicy",
                self.iam_policy,
            ),
            # Cloud Storage JSON API: buckets and their IAM
            r("storage", "GET", r"b/([^/]+)", self.get_bucket),
            r("storage", "POST", r"b", self.create_bucket),
            r("storage", "(GET|PUT)", r"b/([^/]+)/iam", self.bucket_policy),
            # Secret Manager
            r("secretmanager", "GET", r"v1/(projects/[^/]+/secrets/[^/:]+)", self.get),
            r("secretmanager", "POST", r"v1/(projects/[^/]+)/secrets", self.create_secret),
            r("secretmanager", "POST", r"v1/(projects/[^/]+/secrets/[^/:]+):addVersion", self.add_version),
            r(
                "secretmanager",
                "(GET|POST)",
                r"v1/(projects/[^/]+/secrets/[^/:]+):(get|set)IamPolicy",
                self.iam_policy,
            ),
            # Cloud SQL Admin (v1beta4 paths, also served under v1)
            r("sql", "GET", r"(?:sql/)?v1(?:beta4)?/projects/([^/]+)/operations/([^/]+)", self.sql_operation),
            r("sql", "GET", r"(?:sql/)?v1(?:beta4)?/(projects/[^/]+/instances/[^/]+)", self.get),
            r("sql", "POST", r"(?:sql/)?v1(?:beta4)?/projects/([^/]+)/instances", self.create_instance),
            r(
                "sql",
                "GET",
                r"(?:sql/)?v1(?:beta4)?/(projects/[^/]+/instances/[^/]+/databases/[^/]+)",
                self.get,
            ),
            r(
                "sql",
                "POST",
                r"(?:sql/)?v1(?:beta4)?/projects/([^/]+)/instances/([^/]+)/databases",
                self.create_db,
            ),
            r("sql", "GET", r"(?:sql/)?v1(?:beta4)?/(projects/[^/]+/instances/[^/]+/users/[^/]+)", self.get),
            r(
                "sql",
                "POST",
                r"(?:sql/)?v1(?:beta4)?/projects/([^/]+)/instances/([^/]+)/users",
                self.sql_user,
            ),
            r("sql", "PUT", r"(?:sql/)?v1(?:beta4)?/projects/([^/]+)/instances/([^/]+)/users", self.sql_user),
            # Cloud Tasks
            r("cloudtasks", "GET", r"v2/(projects/[^/]+/locations/[^/]+/queues/[^/:]+)", self.get),
            r("cloudtasks", "POST", r"v2/(projects/[^/]+/locations/[^/]+)/queues", self.create_queue),
            r("cloudtasks", "PATCH", r"v2/(projects/[^/]+/locations/[^/]+/queues/[^/:]+)", self.update),
            r(
                "cloudtasks",
                "POST",
                r"v2/(projects/[^/]+/locations/[^/]+/queues/[^/:]+):(get|set)IamPolicy",
                self.iam_policy,
            ),
            # Cloud Run Admin API v1 (Knative-style resources on the regional endpoint) and its IAM
            r(
                "run",
                "GET",
                r"apis/(serving\.knative\.dev|run\.googleapis\.com)/v1/namespaces/([^/]+)/(services|jobs)/([^/:]+)",
                self.get_run,
            ),
            r(
                "run",
                "POST",
                r"apis/(serving\.knative\.dev|run\.googleapis\.com)/v1/namespaces/([^/]+)/(services|jobs)",
                self.create_run,
            ),
            r(
                "run",
                "POST",
                r"v1/(projects/[^/]+/locations/[^/]+/(?:services|jobs)/[^/:]+):(get|set)IamPolicy",
                self.iam_policy,
            ),
            r(
                "run",
                "GET",
                r"v1/(projects/[^/]+/locations/[^/]+/(?:services|jobs)/[^/:]+):(get)IamPolicy",
                self.iam_policy,
            ),
            # Cloud Scheduler
            r("cloudscheduler", "GET", r"v1/(projects/[^/]+/locations/[^/]+/jobs/[^/:]+)", self.get),
            r(
                "cloudscheduler",
                "POST",
                r"v1/(projects/[^/]+/locations/[^/]+)/jobs",
                self.create_scheduler_job,
            ),
            r("cloudscheduler", "PATCH", r"v1/(projects/[^/]+/locations/[^/]+/jobs/[^/:]+)", self.update),
        ]

    @staticmethod
    def _route(api: str, method: str, pattern: str, handler: Callable[..., Any]) -> Any:
        return (api, method, re.compile(pattern), handler)

    # -- dispatch -------------------------------------------------------------------------------

    def handle(self, method: str, api: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        call = Call(method, api, path, query, body)
        with self.lock:
            self.calls.append(call)
            try:
                for route_api, route_method, pattern, handler in self.routes:
                    match = pattern.fullmatch(path)
                    if route_api == api and re.fullmatch(route_method, method) and match:
                        self.api, self.method = api, method
                        call.status, answer = 200, handler(*match.groups(), query=query, body=body)
                        return call.status, answer
                raise Error(400, "INVALID_ARGUMENT", f"the stand-in has no route for {method} {api} /{path}")
            except Error as error:
                call.status = error.code
                return error.code, error.body()
            except Exception as error:  # a bug of the stand-in: make it visible in the call log
                call.status = 500
                call.body = {"request": body, "stand-in error": repr(error)}
                return 500, Error(500, "INTERNAL", repr(error)).body()

    # -- generic resources ----------------------------------------------------------------------

    def key(self, name: str) -> str:
        """Resources and policies are kept per API: a Cloud Run job and a Cloud Scheduler job share names."""
        return f"{self.api}:{name}"

    def get(self, name: str, *_: str, query: dict[str, str], body: Any) -> dict[str, Any]:
        if self.key(name) not in self.state.resources:
            raise not_found(name)
        return self.state.resources[self.key(name)]

    def put(self, name: str, resource: dict[str, Any]) -> dict[str, Any]:
        if self.key(name) in self.state.resources:
            raise Error(409, "ALREADY_EXISTS", f"{name} already exists")
        self.state.resources[self.key(name)] = resource
        return resource

    def update(self, name: str, *_: str, query: dict[str, str], body: Any) -> dict[str, Any]:
        resource = self.get(name, query=query, body=body)
        resource.update({key: value for key, value in body.items() if key != "name"})
        return resource

    def iam_policy(
        self, resource: str, verb: str, *_: str, query: dict[str, str], body: Any
    ) -> dict[str, Any]:
        """getIamPolicy / setIamPolicy (https://cloud.google.com/iam/docs/reference/rest/v1/Policy)."""
        if resource.count("/") > 1 or not resource.startswith("projects/"):
            self.get(resource, query=query, body=body)
        policy = self.state.policies.setdefault(
            self.key(resource), {"version": 1, "etag": "BwAAAAA=", "bindings": []}
        )
        if verb == "set":
            new = body["policy"]
            if new.get("etag") not in (None, policy["etag"]):
                raise Error(409, "ABORTED", "There were concurrent policy changes.")
            version = int(base64.b64decode(policy["etag"])[-1:].hex() or "0", 16) + 1
            policy.clear()
            policy.update(new, etag=base64.b64encode(b"Bw" + bytes([version % 256])).decode())
            policy.setdefault("bindings", [])
        return policy

    # -- per API --------------------------------------------------------------------------------

    def batch_enable(self, project: str, *, query: dict[str, str], body: Any) -> dict[str, Any]:
        self.state.enabled.update(body.get("serviceIds", []))
        services = [
            {"name": f"projects/{PROJECT_NUMBER}/services/{s}", "state": "ENABLED"}
            for s in body["serviceIds"]
        ]
        return _operation(
            "operations/acat.p2-" + PROJECT_NUMBER,
            {"services": services},
            "type.googleapis.com/google.api.serviceusage.v1.BatchEnableServicesResponse",
        )

    def service_state(
        self, project: str, service: str, *, query: dict[str, str], body: Any
    ) -> dict[str, Any]:
        # Commands check that their API is enabled first; the fake project has them all enabled.
        return {"name": f"projects/{PROJECT_NUMBER}/services/{service}", "state": "ENABLED"}

    def project(self, project: str, *, query: dict[str, str], body: Any) -> dict[str, Any]:
        return {"projectId": project, "projectNumber": PROJECT_NUMBER, "lifecycleState": "ACTIVE"}

    def get_service_account(self, email: str, *, query: dict[str, str], body: Any) -> dict[str, Any]:
        return self.get(f"serviceAccounts/{email}", query=query, body=body)

    def create_service_account(self, project: str, *, query: dict[str, str], body: Any) -> dict[str, Any]:
        email = f"{body['accountId']}@{project}.iam.gserviceaccount.com"
        account = {
            "name": f"projects/{project}/serviceAccounts/{email}",
            "projectId": project,
            "uniqueId": str(100000000000000000000 + len(self.state.resources)),
            "email": email,
            "displayName": body.get("serviceAccount", {}).get("displayName", ""),
            "etag": "MDEwMjE5MjA=",
            "oauth2ClientId": "1",
        }
        return self.put(f"serviceAccounts/{email}", account)

    def sa_policy(self, email: str, verb: str, *, query: dict[str, str], body: Any) -> dict[str, Any]:
        return self.iam_policy(f"serviceAccounts/{email}", verb, query=query, body=body)

    def create_role(self, parent: str, *, query: dict[str, str], body: Any) -> dict[str, Any]:
        role = {"name": f"{parent}/roles/{body['roleId']}", "etag": "BwAAAAA=", **body["role"]}
        return self.put(role["name"], role)

    def testable_permissions(self, *, query: dict[str, str], body: Any) -> dict[str, Any]:
        """gcloud checks a custom role's permissions against this list before creating the role."""
        verbs = ["create", "delete", "enable", "fullView", "get", "list", "pause", "run", "update"]
        return {
            "permissions": [
                {"name": f"cloudscheduler.jobs.{verb}", "stage": "GA", "customRolesSupportLevel": "SUPPORTED"}
                for verb in verbs
            ]
        }

    def create_repo(self, parent: str, *, query: dict[str, str], body: Any) -> dict[str, Any]:
        name = f"{parent}/repositories/{query['repositoryId']}"
        repo = {**body, "name": name, "createTime": "2026-01-01T00:00:00Z"}
        self.put(name, repo)
        return _operation(
            f"{parent}/operations/{uuid.uuid4()}",
            repo,
            "type.googleapis.com/google.devtools.artifactregistry.v1.Repository",
        )

    def get_bucket(self, bucket: str, *, query: dict[str, str], body: Any) -> dict[str, Any]:
        return self.get(f"buckets/{bucket}", query=query, body=body)

    def create_bucket(self, *, query: dict[str, str], body: Any) -> dict[str, Any]:
        bucket = {
            "kind": "storage#bucket",
            "id": body["name"],
            "name": body["name"],
            "location": "US",
            **body,
        }
        bucket.update(
            projectNumber=PROJECT_NUMBER, metageneration="1", timeCreated="2026-01-01T00:00:00.000Z"
        )
        return self.put(f"buckets/{body['name']}", bucket)

    def bucket_policy(self, bucket: str, *, query: dict[str, str], body: Any) -> dict[str, Any]:
        # The JSON API's own shape: https://cloud.google.com/storage/docs/json_api/v1/buckets/setIamPolicy
        resource = f"buckets/{bucket}"
        policy = self.iam_policy(
            resource, "set" if self.method == "PUT" else "get", query=query, body={"policy": body}
        )
        return {"kind": "storage#policy", "resourceId": f"projects/_/buckets/{bucket}", **policy}

    def create_secret(self, parent: str, *, query: dict[str, str], body: Any) -> dict[str, Any]:
        name = f"{parent}/secrets/{query['secretId']}"
        return self.put(name, {**body, "name": name, "createTime": "2026-01-01T00:00:00Z", "etag": '"1"'})

    def add_version(self, secret: str, *, query: dict[str, str], body: Any) -> dict[str, Any]:
        self.get(secret, query=query, body=body)
        self.state.secret_values.append(base64.b64decode(body["payload"]["data"]).decode())
        return {"name": f"{secret}/versions/1", "createTime": "2026-01-01T00:00:00Z", "state": "ENABLED"}

    def _sql_done(self, project: str, kind: str, target: str) -> dict[str, Any]:
        operation = _sql_operation(project, kind, target)
        self.sql_operations[operation["name"]] = operation
        return operation

    def sql_operation(self, project: str, name: str, *, query: dict[str, str], body: Any) -> dict[str, Any]:
        if name not in self.sql_operations:
            raise not_found(name)
        return self.sql_operations[name]

    def create_instance(self, project: str, *, query: dict[str, str], body: Any) -> dict[str, Any]:
        name = body["name"]
        instance = {
            "kind": "sql#instance",
            **body,
            "project": project,
            "state": "RUNNABLE",
            "connectionName": f"{project}:{body.get('region', '')}:{name}",
        }
        self.put(f"projects/{project}/instances/{name}", instance)
        return self._sql_done(project, "CREATE", name)

    def create_db(self, project: str, instance: str, *, query: dict[str, str], body: Any) -> dict[str, Any]:
        self.put(
            f"projects/{project}/instances/{instance}/databases/{body['name']}",
            {"kind": "sql#database", **body},
        )
        return self._sql_done(project, "CREATE_DATABASE", instance)

    def sql_user(self, project: str, instance: str, *, query: dict[str, str], body: Any) -> dict[str, Any]:
        name = body.get("name") or query["name"]
        self.state.sql_passwords.append(body["password"])
        self.state.resources[self.key(f"projects/{project}/instances/{instance}/users/{name}")] = {
            "kind": "sql#user",
            "name": name,
            "instance": instance,
            "project": project,
        }
        return self._sql_done(project, "CREATE_USER" if "name" in body else "UPDATE_USER", instance)

    def create_queue(self, parent: str, *, query: dict[str, str], body: Any) -> dict[str, Any]:
        return self.put(body["name"], {**body, "state": "RUNNING"})

    def get_run(
        self, group: str, namespace: str, kind: str, name: str, *, query: dict[str, str], body: Any
    ) -> Any:
        return self.get(f"namespaces/{namespace}/{kind}/{name}", query=query, body=body)

    def create_run(self, group: str, namespace: str, kind: str, *, query: dict[str, str], body: Any) -> Any:
        """A Knative-style resource, as the v1 API answers a create (its status conditions pending)."""
        name = body["metadata"]["name"]
        resource = {
            **body,
            "metadata": {
                **body["metadata"],
                "namespace": namespace,
                "generation": 1,
                "uid": str(uuid.uuid4()),
            },
        }
        resource["status"] = {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "Unknown"}]}
        self.put(f"namespaces/{namespace}/{kind}/{name}", resource)
        # Its IAM policy is addressed by the v1 "projects/P/locations/L/..." name.
        self.state.resources[self.key(f"projects/{namespace}/locations/{self.region}/{kind}/{name}")] = (
            resource
        )
        return resource

    region = "us-central1"

    def create_scheduler_job(self, parent: str, *, query: dict[str, str], body: Any) -> dict[str, Any]:
        return self.put(body["name"], {**body, "state": "ENABLED", "userUpdateTime": "2026-01-01T00:00:00Z"})


class _Handler(BaseHTTPRequestHandler):
    """Serves origin-form requests (`/run/v1/...`) and proxy absolute-form ones (`http://host/run/...`)."""

    apis: GoogleApis
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"raw": raw.decode("latin-1")}
        api, _, path = url.path.lstrip("/").partition("/")
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            status, answer = 401, Error(401, "UNAUTHENTICATED", "no valid access token").body()
        else:
            status, answer = self.apis.handle(self.command, api, path, query, body)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


TOKEN = "ya29.stand-in-token"


@contextmanager
def serving() -> Iterator[tuple[GoogleApis, int]]:
    """The stand-in on a free port of 127.0.0.1, for the duration of the block."""
    apis = GoogleApis()
    handler = type("Handler", (_Handler,), {"apis": apis})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield apis, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def gcloud_config(config_dir: Path, port: int, project: str) -> dict[str, str]:
    """A throw-away gcloud configuration pointed at the stand-in; returns the environment to run in."""
    config_dir.mkdir(parents=True, exist_ok=True)
    token = config_dir / "access-token"
    token.write_text(TOKEN)
    (config_dir / "configurations").mkdir(exist_ok=True)
    properties = [
        "[core]",
        f"project = {project}",
        "disable_usage_reporting = true",
        "[component_manager]",
        "disable_update_check = true",
        "[auth]",
        f"access_token_file = {token}",
        "[proxy]",
        "type = http",
        "address = 127.0.0.1",
        f"port = {port}",
        "[api_endpoint_overrides]",
        *(f"{api} = http://{api}.stand-in/{api}/" for api in APIS),
    ]
    (config_dir / "configurations" / "config_default").write_text("\n".join(properties) + "\n")
    (config_dir / "active_config").write_text("default")
    return {"CLOUDSDK_CONFIG": str(config_dir)}
