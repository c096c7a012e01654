"""WSGI entry point, served by gunicorn on Cloud Run."""

import os

from django.core.wsgi import get_wsgi_application

from config.cloud_logging import CloudTraceMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Every record logged while a request is handled carries the request's trace (Cloud Logging).
application = CloudTraceMiddleware(get_wsgi_application())
