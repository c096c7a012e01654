"""copier.yml itself: every question documented, defaults valid, bad answers refused clearly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import QUESTIONS, ROOT, Render

ASKED = {name: spec for name, spec in QUESTIONS.items() if not name.startswith("_")}


def choice_values(spec: dict[str, Any]) -> list[Any]:
    """The values of a question's choices (copier accepts a list or a {label: value} dict)."""
    choices = spec["choices"]
    return list(choices.values()) if isinstance(choices, dict) else list(choices)


@pytest.mark.parametrize("name", sorted(ASKED))
def test_every_question_has_a_one_line_help(name: str) -> None:
    help_text = ASKED[name].get("help", "")
    assert help_text.strip(), f"question {name!r} has no help"
    assert "\n" not in help_text.strip(), f"question {name!r}: keep help to one line"


@pytest.mark.parametrize("name", sorted(name for name, spec in ASKED.items() if "choices" in spec))
def test_choice_defaults_are_valid_values(name: str) -> None:
    spec = ASKED[name]
    values = choice_values(spec)
    defaults = spec["default"] if spec.get("multiselect") else [spec["default"]]
    assert set(defaults) <= set(values), f"question {name!r}: default {spec['default']!r} not in {values}"


def test_readme_options_table_lists_every_question() -> None:
    readme = (ROOT / "README.md").read_text()
    shown = [name for name, spec in ASKED.items() if spec.get("when") is not False]
    assert [name for name in shown if f"| `{name}` |" not in readme] == []


def test_computed_questions_are_never_asked() -> None:
    assert ASKED["lock_dependencies"]["when"] is False


def test_pure_defaults_render(render: Render, tmp_path: Path) -> None:
    """A user pressing Enter on every question (`--defaults`) gets a valid project."""
    dst = render(tmp_path / "service", project_name=ASKED["project_name"]["default"])
    answers = yaml.safe_load((dst / ".copier-answers.yml").read_text())
    assert answers["project_slug"] == "my_service"
    assert answers["service_name"] == "my-service"
    assert answers["google_backends"] == ASKED["google_backends"]["default"]


def test_long_slug_gives_a_valid_default_service_name(render: Render, tmp_path: Path) -> None:
    """A slug longer than 22 characters still gives a default service name within its limit."""
    dst = render(tmp_path / "service", project_name="Quarterly Revenue Reconciler")
    answers = yaml.safe_load((dst / ".copier-answers.yml").read_text())
    assert answers["project_slug"] == "quarterly_revenue_reconciler"
    assert answers["service_name"] == "quarterly-revenue-reco"


@pytest.mark.parametrize(
    ("question", "value", "message"),
    [
        ("project_name", "   ", "must not be empty"),
        ("project_slug", "Bad-Slug", "lowercase Python identifier"),
        ("project_slug", "1orders", "lowercase Python identifier"),
        ("project_slug", "x", "lowercase Python identifier"),
        ("project_slug", "django_tasks_google", "clashes with a package"),
        ("project_slug", "config", "clashes with a package"),
        ("gcp_project_id", "x", "Google Cloud project id"),
        ("gcp_project_id", "Acme-Test-123", "Google Cloud project id"),
        ("gcp_project_id", "acme-test-", "Google Cloud project id"),
        ("gcp_region", "moon", "region"),
        ("service_name", "Bad_Name", "service name"),
        ("service_name", "orders-", "service name"),
        ("service_name", "a-very-long-service-name", "service name"),
        ("google_backends", [], "Choose Cloud Tasks, Cloud Run Jobs or both"),
        ("google_backends", ["cloud_scheduler"], "Choose Cloud Tasks, Cloud Run Jobs or both"),
    ],
    ids=lambda value: str(value) if not isinstance(value, str) or value.strip() else "blank",
)
def test_invalid_answer_is_refused_with_a_clear_message(
    render: Render, tmp_path: Path, question: str, value: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=f"Validation error for question '{question}'") as error:
        render(tmp_path / "service", **{question: value})
    assert message in str(error.value)
    assert not (tmp_path / "service").exists(), "a refused answer must leave nothing behind"


@pytest.mark.parametrize(
    ("question", "value"),
    [("python_version", "3.11"), ("database", "mysql"), ("google_backends", ["cloud_tasks", "celery"])],
)
def test_unknown_choice_is_refused(render: Render, tmp_path: Path, question: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"Invalid choice for '{question}'"):
        render(tmp_path / "service", **{question: value})


@pytest.mark.parametrize(
    ("question", "value"),
    [
        ("project_slug", "ab"),
        ("project_slug", "a" * 31),  # (the derived service_name would be too long: given below)
        ("gcp_project_id", "abcdef"),
        ("gcp_project_id", "a" + "-0" * 14 + "z"),
        ("gcp_region", "europe-west4"),
        ("service_name", "ab"),
        ("service_name", "a" * 22),
    ],
)
def test_boundary_answers_are_accepted(render: Render, tmp_path: Path, question: str, value: str) -> None:
    dst = render(tmp_path / "service", **{"service_name": "orders", question: value})
    assert yaml.safe_load((dst / ".copier-answers.yml").read_text())[question] == value
