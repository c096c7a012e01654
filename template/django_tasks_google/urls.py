"""Push endpoints: mount with `path("tasks/", include("django_tasks_google.urls"))`."""

from django.urls import path

from . import views

app_name = "django_tasks_google"

urlpatterns = [
    # Cloud Tasks pushes executions here.
    path("execute/", views.execute_task_view, name="execute_task"),
    # Cloud Scheduler fires scheduled tasks here.
    path("schedule/", views.schedule_task_view, name="schedule_task"),
]
