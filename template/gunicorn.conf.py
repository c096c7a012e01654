"""gunicorn settings for Cloud Run, read automatically from the working directory.

One image serves the web service and every Cloud Run Job; only the service starts gunicorn
(the image's default command). Values come from the environment so a deploy can tune them
without rebuilding:

- PORT: set by Cloud Run (8080 unless configured otherwise).
- WEB_CONCURRENCY: worker processes (default 1; raise it with the service's CPUs).
- GUNICORN_THREADS: threads per worker (default 4). Keep the service's `--concurrency` close to
  WEB_CONCURRENCY x GUNICORN_THREADS so requests queue at Cloud Run's front end, which can start
  another instance, rather than inside this container. Each busy thread holds a database
  connection, and a task it runs one more for its heartbeat: cloudbuild.yaml sizes the instance
  count against Cloud SQL's connection limit with this number.
"""

import os

bind = [f"0.0.0.0:{os.environ.get('PORT', '8080')}"]

workers = int(os.environ.get("WEB_CONCURRENCY", "1"))

# Threaded workers on purpose: requests (and Cloud Tasks pushes, which run tasks inside the request)
# are handled in pool threads, never in the worker's main thread, so gunicorn's own SIGTERM handler
# stays in place while a task runs and a shutdown is never mistaken for a task timeout.
worker_class = "gthread"
threads = max(2, int(os.environ.get("GUNICORN_THREADS", "4")))

# No worker timeout: Cloud Run's request timeout (the deploy sets 30 minutes, the longest dispatch
# deadline Cloud Tasks allows) bounds each request. A gthread worker keeps its heartbeat while its
# threads are busy, so a timeout here would only add a second, confusing limit.
timeout = 0

# On scale-in or a new revision Cloud Run sends SIGTERM and kills the container 10 s later. Stop
# accepting at once and give in-flight requests 8 s; a task cut short is redelivered by Cloud Tasks
# (no response counts as a failed attempt) and resumes once its lease expires.
graceful_timeout = 8

# Cloud Run's front end is the only client that reaches the container and it terminates TLS, so its
# X-Forwarded-* headers are trusted (Django's SECURE_PROXY_SSL_HEADER relies on X-Forwarded-Proto).
forwarded_allow_ips = "*"

# Logs go to stdout/stderr, which Cloud Logging collects; %(M)s is the duration in milliseconds.
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'

# On Cloud Run gunicorn's own records are JSON lines like the application's (config/cloud_logging.py;
# the same rule as LOG_FORMAT in config/settings.py), and the access log is off: Cloud Run's request
# log already has every request, with its status and latency.
if os.environ.get("DJANGO_LOG_FORMAT", "json" if os.environ.get("K_SERVICE") else "plain") == "json":
    accesslog = None
    logconfig_dict = {
        "root": {"level": "INFO", "handlers": ["json"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["json"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False},
        },
        "handlers": {
            "json": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "json"}
        },
        "formatters": {"json": {"()": "config.cloud_logging.CloudLoggingFormatter"}},
    }

# No preload_app: gRPC channels of the Google clients must be created after the fork, in each worker.
