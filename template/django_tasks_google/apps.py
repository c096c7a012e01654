from django.apps import AppConfig


class DjangoTasksGoogleConfig(AppConfig):
    name = "django_tasks_google"
    verbose_name = "Tasks on Google Cloud"
    # Fixed here so a project's DEFAULT_AUTO_FIELD never creates migrations in this app.
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks

        from .scheduler import check_declared_scheduled_tasks

        checks.register(check_declared_scheduled_tasks)
