from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    # Cloud Tasks and Cloud Scheduler push to tasks/execute/ and tasks/schedule/.
    path("tasks/", include("django_tasks_google.urls")),
]
