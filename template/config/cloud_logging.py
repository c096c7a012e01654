"""Logs that Cloud Logging understands: one JSON object per record, tied to its request and task.

Cloud Run sends each line a container writes to Cloud Logging as one entry; a line that is a JSON
object becomes a structured entry whose special fields set the entry's severity, trace and labels
(https://cloud.google.com/logging/docs/structured-logging). So on Cloud Run the settings format
every record as a single JSON line: a traceback stays inside its record's entry (as `stack_trace`,
a field Error Reporting reads: https://cloud.google.com/error-reporting/docs/formatting-error-messages)
instead of becoming one entry per line, and `CloudTraceMiddleware` puts the request's trace on
every record logged while it is handled, so a push's lines group under its request in Logs Explorer.

python-json-logger does the JSON encoding (exceptions, extra fields, non-JSON values); this module
only adds Google's field names.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from pythonjsonlogger.json import JsonFormatter

from django_tasks_google.log_context import attempt_labels

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

TRACE_FIELD = "logging.googleapis.com/trace"
SPAN_FIELD = "logging.googleapis.com/spanId"
SAMPLED_FIELD = "logging.googleapis.com/trace_sampled"
LABELS_FIELD = "logging.googleapis.com/labels"


@dataclass(frozen=True)
class Trace:
    """The trace of the request being handled, as Cloud Logging's special fields want it."""

    resource: str  # projects/PROJECT_ID/traces/TRACE_ID
    span_id: str  # 16 hexadecimal digits
    sampled: bool


_request_trace: ContextVar[Trace | None] = ContextVar("request_trace", default=None)

# Header formats: https://cloud.google.com/trace/docs/trace-context
# traceparent (W3C, preferred): VERSION-TRACE_ID-PARENT_SPAN_ID-TRACE_FLAGS, all hexadecimal.
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
# X-Cloud-Trace-Context (legacy fallback): TRACE_ID/SPAN_ID;o=OPTIONS, the span id in DECIMAL.
CLOUD_TRACE_CONTEXT = re.compile(r"^([0-9a-f]{32})(?:/([0-9]{1,20}))?(?:;o=([01]))?$")


def parse_trace(project_id: str, traceparent: str, cloud_trace_context: str) -> Trace | None:
    """The trace named by a request's headers, or None when neither header is valid."""
    if match := TRACEPARENT.match(traceparent.strip().lower()):
        trace_id, span_id, flags = match.groups()
        if trace_id.strip("0") and span_id.strip("0"):  # all-zero ids are invalid
            return Trace(f"projects/{project_id}/traces/{trace_id}", span_id, bool(int(flags, 16) & 1))
    if match := CLOUD_TRACE_CONTEXT.match(cloud_trace_context.strip().lower()):
        trace_id, span, sampled = match.groups()
        if trace_id.strip("0") and span and 0 < int(span) < 2**64:
            return Trace(f"projects/{project_id}/traces/{trace_id}", f"{int(span):016x}", sampled == "1")
    return None


def current_trace() -> Trace | None:
    return _request_trace.get()


class CloudTraceMiddleware:
    """WSGI middleware: remember the request's trace (Cloud Run's front end sets the headers).

    WSGI rather than Django middleware so that it also spans what Django logs around its middleware
    chain, such as django.request's "Internal Server Error" line for a failed push.
    """

    def __init__(self, application: WSGIApplication) -> None:
        self.application = application
        self.project_id = settings.GCP_PROJECT_ID

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        trace = parse_trace(
            self.project_id,
            environ.get("HTTP_TRACEPARENT", ""),
            environ.get("HTTP_X_CLOUD_TRACE_CONTEXT", ""),
        )
        token = _request_trace.set(trace)
        try:
            return self.application(environ, start_response)
        finally:
            _request_trace.reset(token)


class CloudLoggingFormatter(JsonFormatter):
    """One JSON object per record with Cloud Logging's field names.

    `severity` takes the level name (DEBUG, INFO, WARNING, ERROR and CRITICAL are all LogSeverity
    values), `time` the record's own time (RFC 3339), `stack_trace` the formatted exception.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            "{message}{levelname}{name}",
            style="{",
            rename_fields={"levelname": "severity", "name": "logger", "exc_info": "stack_trace"},
            timestamp="time",
            **kwargs,
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        if trace := current_trace():
            log_data[TRACE_FIELD] = trace.resource
            log_data[SPAN_FIELD] = trace.span_id
            log_data[SAMPLED_FIELD] = trace.sampled
        if labels := attempt_labels():
            log_data[LABELS_FIELD] = labels
