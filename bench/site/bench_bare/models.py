from django.db import models


class Hit(models.Model):
    """One row per request of the bare view."""

    body = models.TextField()
