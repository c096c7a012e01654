"""Scheduled tasks in the admin: a declared one is read-only with a banner saying where it comes
from; fields that never apply are not offered; times are in the site's zone, labelled.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from django_tasks_google.models import ScheduledTask, ScheduledTaskFiring
from django_tasks_google.scheduler import schedule_task
from tests.django_tasks_google import sample_tasks

pytestmark = pytest.mark.django_db


def local(name: str = "nightly", **fields: object) -> ScheduledTask:
    scheduled = schedule_task(sample_tasks.add, "0 3 * * *", name=name, backend="test-tasks", args=[1, 2])
    ScheduledTask.objects.filter(pk=scheduled.pk).update(**fields)
    return ScheduledTask.objects.get(pk=scheduled.pk)


def change_url(scheduled: ScheduledTask) -> str:
    return reverse("admin:django_tasks_google_scheduledtask_change", args=[scheduled.pk])


def test_a_declared_schedule_is_read_only_with_a_banner(admin_client: Client) -> None:
    declared = local(declared=True)

    response = admin_client.get(change_url(declared))
    html = response.content.decode()

    assert 'class="dtg-banner"' in html and "settings.SCHEDULED_TASKS" in html
    assert 'name="_save"' not in html and "/delete/" not in html
    response = admin_client.post(change_url(declared), {"name": "renamed", "schedule": "* * * * *"})
    assert response.status_code == 403
    assert ScheduledTask.objects.get(pk=declared.pk).schedule == "0 3 * * *"


def test_an_admin_made_schedule_is_editable_without_a_banner(admin_client: Client) -> None:
    html = admin_client.get(change_url(local())).content.decode()
    assert 'name="_save"' in html and 'class="dtg-banner"' not in html


def test_fields_that_do_not_apply_are_not_shown(admin_client: Client) -> None:
    html = admin_client.get(change_url(local())).content.decode()
    assert "Run after" not in html  # a recurring schedule has no single start time
    assert "Idempotency key" not in html  # no Cloud Scheduler job behind a local schedule
    with_run_after = local("legacy", run_after=timezone.now())
    assert "Run after" in admin_client.get(change_url(with_run_after)).content.decode()  # shown, read-only


def test_times_are_in_the_site_zone_and_labelled(admin_client: Client, settings: object) -> None:
    scheduled = local()
    ScheduledTaskFiring.objects.create(
        scheduled_task=scheduled,
        key="local:1",
        source=ScheduledTaskFiring.Source.LOCAL,
        scheduled_for=timezone.now() - timedelta(days=1),
    )
    html = admin_client.get(change_url(scheduled)).content.decode()
    zone = timezone.localtime().strftime("%Z")
    # created, changed, next run and the firing's slot: one format, the zone named
    assert html.count(f" {zone}</") >= 3
    assert "p.m." not in html and "a.m." not in html
