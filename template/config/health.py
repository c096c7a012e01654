"""Health endpoints answered before Django looks at the Host header.

Cloud Run's probes and load balancers may send a Host that is not in ALLOWED_HOSTS; answering from
the first middleware keeps the probes independent of host configuration.

- `/healthz` (liveness): the process answers. Cheap, never touches the database, so a database
  outage does not get healthy instances restarted.
- `/readyz` (readiness, the deploy's startup probe): the database answers `SELECT 1`; 503 when it
  does not, so a revision that cannot reach its database never receives traffic.
"""

import logging
from collections.abc import Callable

from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse

LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"

logger = logging.getLogger(__name__)


def database_ready() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError:
        logger.warning("Readiness check: the database does not answer", exc_info=True)
        # A broken connection must not be reused by the next request of this thread.
        connection.close()
        return False
    return True


class HealthCheckMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path == LIVENESS_PATH:
            return JsonResponse({"status": "ok"})
        if request.path == READINESS_PATH:
            if database_ready():
                return JsonResponse({"status": "ok", "database": "ok"})
            return JsonResponse({"status": "unavailable", "database": "unreachable"}, status=503)
        return self.get_response(request)
