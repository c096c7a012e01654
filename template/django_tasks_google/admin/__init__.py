"""The operators' console in Django's admin: scheduled tasks and task executions.

One module per job: ``scheduled_tasks`` (definitions, edited in sync with Cloud Scheduler),
``executions`` (the list and page of task executions), ``filters`` (their sidebar filters),
``attempts`` (an execution's attempts and errors as operators read them) and ``operations``
(cancel and retry, shared by the list's actions and the page's buttons). Importing the package
registers the ModelAdmins.
"""

from .executions import TaskExecutionAdmin
from .scheduled_tasks import ScheduledTaskAdmin, discovered_tasks

__all__ = ["ScheduledTaskAdmin", "TaskExecutionAdmin", "discovered_tasks"]
