from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from bench_bare.models import Hit


@csrf_exempt
@require_POST
def insert(request: HttpRequest) -> HttpResponse:
    """The least a push endpoint can do: store the body and answer 204."""
    Hit.objects.create(body=request.body.decode())
    return HttpResponse(status=204)
