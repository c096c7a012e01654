"""The operators' console in a real browser: headless Chromium, driven by Selenium, against the
live test server.

It logs in, opens the executions list, a failed execution (and retries it), a cancelled one, a
running one (and cancels it), edits a schedule and opens a declared one, checking what an operator
would see, and saves a full-page screenshot of every page into a directory it prints (set
ADMIN_SCREENSHOTS_DIR to choose it; CI keeps it as an artefact). Skipped, with the reason, where
Chromium, chromedriver or Selenium is missing (Debian: apt-get install chromium chromium-driver).
"""

from __future__ import annotations

import os
import shutil
import traceback
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from django_tasks_google.models import ScheduledTask, TaskExecution
from django_tasks_google.scheduler import schedule_task
from tests.django_tasks_google import sample_tasks

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WIDTH, HEIGHT = 1400, 900


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Path:
    chosen = os.environ.get("ADMIN_SCREENSHOTS_DIR")
    directory = Path(chosen) if chosen else tmp_path_factory.mktemp("admin-screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"\nAdmin screenshots: {directory}")
    return directory


@pytest.fixture
def browser() -> Iterator[Any]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("No Chromium and chromedriver on PATH (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={WIDTH},{HEIGHT}")
    # An explicit driver path: Selenium Manager would otherwise try to download one.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.implicitly_wait(10)
    yield driver
    driver.quit()


class Console:
    """The browser, the live server and the screenshot directory, with the steps the test takes."""

    def __init__(self, driver: Any, base_url: str, directory: Path) -> None:
        self.driver, self.base_url, self.directory = driver, base_url, directory
        self.shots = 0

    def open(self, url: str) -> None:
        self.driver.get(self.base_url + url)

    def css(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def button(self, label: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.XPATH, f"//button[normalize-space()='{label}']")

    def submit(self, element: Any) -> None:
        """Click a button that posts a form, and wait until the browser left the page. Selenium's
        click can return before the server has answered, while the old page is still shown and the
        request's writes may not be committed yet: reading either at once is a race."""
        from selenium.webdriver.support.expected_conditions import staleness_of
        from selenium.webdriver.support.wait import WebDriverWait

        page = self.css("html")
        element.click()
        WebDriverWait(self.driver, 30).until(staleness_of(page))

    def text(self) -> str:
        return str(self.css("body").text)

    def screenshot(self, name: str) -> Path:
        """The whole page at 1,400 px wide."""
        self.shots += 1
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(WIDTH, max(HEIGHT, int(height) + 120))
        path = self.directory / f"{self.shots:02}-{name}.png"
        self.css("body").screenshot(str(path))
        self.driver.set_window_size(WIDTH, HEIGHT)
        return path


def failure(message: str) -> dict[str, str]:
    try:
        raise ValueError(message)
    except ValueError as exc:
        return {
            "exception_class_path": "builtins.ValueError",
            "traceback": "".join(traceback.format_exception(exc)),
        }


def executions() -> dict[str, TaskExecution]:
    now = timezone.now()

    def row(*args: Any, task: Any = sample_tasks.add, **fields: Any) -> TaskExecution:
        result = task.enqueue(*args)
        TaskExecution.objects.filter(pk=result.id).update(**fields)
        return TaskExecution.objects.get(pk=result.id)

    return {
        "failed": row(
            1,
            2,
            status="FAILED",
            attempts=3,
            max_attempts=3,
            started_at=now - timedelta(minutes=3),
            last_attempted_at=now - timedelta(seconds=20),
            finished_at=now - timedelta(seconds=19),
            worker_ids=["worker-1", "worker-2", "worker-1"],
            errors=[failure("the payment service answered 503"), failure("timed out"), failure("timed out")],
        ),
        "cancelled": row(3, 4, status="FAILED", cancelled_at=now, finished_at=now),
        "running": row(
            5,
            6,
            task=sample_tasks.add.using(backend="test-jobs"),
            status="RUNNING",
            attempts=1,
            started_at=now - timedelta(seconds=65),
            last_attempted_at=now - timedelta(seconds=65),
            worker_ids=["worker-2"],
        ),
        "scheduled": row(7, 8, run_after=now + timedelta(hours=2)),
        "successful": row(
            9, 9, status="SUCCESSFUL", attempts=1, started_at=now, finished_at=now, return_value=18
        ),
    }


def test_an_operator_works_through_the_console(browser: Any, live_server: Any, screenshots: Path) -> None:
    User.objects.create_superuser("operator", "operator@example.com", "operator-password")
    rows = executions()
    nightly = schedule_task(sample_tasks.add, "0 3 * * *", name="nightly", backend="test-tasks", args=[1, 2])
    console = Console(browser, live_server.url, screenshots)

    console.open(reverse("admin:login"))
    console.screenshot("login")
    console.css("#id_username").send_keys("operator")
    console.css("#id_password").send_keys("operator-password")
    console.submit(console.css("input[type=submit]"))
    assert "Site administration" in console.text()

    # The list: a badge per state, and every column inside 1,400 px.
    console.open(reverse("admin:django_tasks_google_taskexecution_changelist"))
    console.screenshot("executions")
    badges = {badge.text for badge in console.all(".dtg-badge")}
    assert {"Failed", "Cancelled", "Running", "Scheduled", "Successful"} <= badges
    assert "ValueError: timed out" in console.text()
    assert "3 / 3" in console.text()
    # No column cut off: the table is no wider than the box that would scroll it sideways, at
    # 1,400 px and with 100 px to spare (another machine's fonts are wider or narrower than ours).
    for width in (WIDTH, WIDTH - 100):
        browser.set_window_size(width, HEIGHT)
        overflow = browser.execute_script(
            "const box = document.querySelector('.results'); return box.scrollWidth - box.clientWidth"
        )
        assert overflow <= 0, f"the executions list scrolls sideways by {overflow} px at {width} px"
    browser.set_window_size(WIDTH, HEIGHT)

    # A failed execution: its attempts, each error's message first, tracebacks collapsed; Retry.
    console.open(reverse("admin:django_tasks_google_taskexecution_change", args=[rows["failed"].pk]))
    assert browser.title.startswith(f"add #{rows['failed'].pk} · Failed")
    assert len(console.all(".dtg-attempt")) == 3
    assert "ValueError: the payment service answered 503" in console.text()
    assert not console.css(".dtg-timeline details pre").is_displayed()
    console.screenshot("failed-execution")
    console.submit(console.button("Retry"))
    copy = TaskExecution.objects.get(retry_of=rows["failed"])
    assert f"Re-enqueued 1 execution(s): {rows['failed'].pk} → {copy.pk}" in console.text()
    assert f"Retried as #{copy.pk}" in console.text()
    console.screenshot("failed-execution-retried")

    # A cancelled execution: told apart from a failure, nothing left to do.
    console.open(reverse("admin:django_tasks_google_taskexecution_change", args=[rows["cancelled"].pk]))
    assert console.css(".dtg-badge").text == "Cancelled"
    assert [button.text for button in console.all(".object-tools button")] == ["RETRY"]  # no Cancel
    console.screenshot("cancelled-execution")

    # A running execution: Cancel and Force cancel, never Delete.
    console.open(reverse("admin:django_tasks_google_taskexecution_change", args=[rows["running"].pk]))
    assert not console.all("a.deletelink")
    console.screenshot("running-execution")
    console.submit(console.button("Cancel"))
    assert console.css(".dtg-badge").text == "Cancelled"
    assert TaskExecution.objects.get(pk=rows["running"].pk).cancelled_at is not None
    console.screenshot("running-execution-cancelled")

    # A schedule: edit it and save.
    console.open(reverse("admin:django_tasks_google_scheduledtask_change", args=[nightly.pk]))
    console.screenshot("schedule")
    schedule = console.css("#id_schedule")
    schedule.clear()
    schedule.send_keys("30 4 * * *")
    console.submit(console.css("input[name=_save]"))
    assert "was changed successfully" in console.text()
    assert ScheduledTask.objects.get(pk=nightly.pk).schedule == "30 4 * * *"
    console.screenshot("schedules")

    # A declared schedule: read-only, with a banner saying where it comes from.
    ScheduledTask.objects.filter(pk=nightly.pk).update(declared=True)
    console.open(reverse("admin:django_tasks_google_scheduledtask_change", args=[nightly.pk]))
    assert "settings.SCHEDULED_TASKS" in console.css(".dtg-banner").text
    assert not console.all("input[name=_save]") and not console.all("a.deletelink")
    console.screenshot("declared-schedule")
