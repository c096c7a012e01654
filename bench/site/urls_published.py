from bench_bare.views import insert
from django.urls import include, path

urlpatterns = [path("tasks/", include("django_tasks_google.urls")), path("bare/", insert)]
