"""Push endpoints for Cloud Tasks (/execute/) and Cloud Scheduler (/schedule/).

Placeholders until the Cloud Tasks and Cloud Scheduler pieces land: they answer 501 so a push
that arrives too early is retried by the platform rather than acknowledged.
"""

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST


@csrf_exempt
@require_POST
def execute_task_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Not implemented yet.", status=501, content_type="text/plain")


@csrf_exempt
@require_POST
def schedule_task_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("Not implemented yet.", status=501, content_type="text/plain")
