"""A health endpoint answered before Django looks at the Host header.

Cloud Run's probes and load balancers may send a Host that is not in ALLOWED_HOSTS; answering
`/healthz` from the first middleware keeps the probe independent of host configuration.
"""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

HEALTH_PATH = "/healthz"


class HealthCheckMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path == HEALTH_PATH:
            return JsonResponse({"status": "ok"})
        return self.get_response(request)
