"""copier.yml itself: every question documented, defaults valid, bad answers refused clearly."""

from __future__ import annotations

import keyword
import re
import sys
from pathlib import Path
from typing import Any

import copier
import pytest
import yaml
from jinja2.sandbox import SandboxedEnvironment

from .conftest import BASE_ANSWERS, QUESTIONS, ROOT, TEMPLATE_TAG, Render

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
    computed = {"lock_dependencies", "reserved_keywords", "reserved_stdlib_modules"}
    computed |= {"reserved_dependencies", "reserved_project_packages"}
    assert all(ASKED[name]["when"] is False for name in computed)


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
        ("project_name", "   ", "Must not be empty"),
        ("project_slug", "Bad-Slug", "Must be 2-31 characters of a-z, 0-9 and _"),
        ("project_slug", "1orders", "Must be 2-31 characters of a-z, 0-9 and _"),
        ("project_slug", "x", "Must be 2-31 characters of a-z, 0-9 and _"),
        ("project_slug", "class", 'Must not be a Python keyword: "class"'),
        ("project_slug", "email", 'Must not shadow the standard library\'s "email"'),
        ("project_slug", "json", 'Must not shadow the standard library\'s "json"'),
        ("project_slug", "django", 'Must not shadow "django", a module the project depends on'),
        ("project_slug", "psycopg", 'Must not shadow "psycopg", a module the project depends on'),
        ("project_slug", "django_tasks_google", "Must not clash with the project's own"),
        ("project_slug", "config", "Must not clash with the project's own"),
        ("gcp_project_id", "x", "Must be 6-30 characters"),
        ("gcp_project_id", "Acme-Test-123", "Must be 6-30 characters"),
        ("gcp_project_id", "acme-test-", "Must be 6-30 characters"),
        ("gcp_region", "moon", "Must be a region name"),
        ("service_name", "Bad_Name", "Must be 2-22 characters"),
        ("service_name", "orders-", "Must be 2-22 characters"),
        ("service_name", "a-very-long-service-name", "Must be 2-22 characters"),
        ("google_backends", [], "Must include Cloud Tasks or Cloud Run Jobs"),
        ("google_backends", ["cloud_scheduler"], "Must include Cloud Tasks or Cloud Run Jobs"),
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


# --- Validation messages: rendered here with Copier's own Jinja filters, every branch -----------

# Copier shows a validation message on one terminal line: it must fit, rule first.
MESSAGE_LIMIT = 70
COMPUTED = {name: spec["default"] for name, spec in ASKED.items() if spec.get("when") is False}
SLUG_FORMAT = re.compile(r"[a-z][a-z0-9_]{1,30}")
RESERVED = [
    *COMPUTED["reserved_keywords"],
    *COMPUTED["reserved_stdlib_modules"],
    *COMPUTED["reserved_dependencies"],
    *COMPUTED["reserved_project_packages"],
]
# Bad values reaching every branch of every validator (the test below checks that they do).
BAD_VALUES: dict[str, list[Any]] = {
    "project_name": ["", "   "],
    "project_slug": ["Bad-Slug", "1orders", "x", "a" * 32, *RESERVED],
    "gcp_project_id": ["x", "Acme-Test-123", "acme-test-"],
    "gcp_region": ["moon", "US-CENTRAL1"],
    "service_name": ["Bad_Name", "orders-", "a-very-long-service-name"],
    "google_backends": [[], ["cloud_scheduler"]],
}


def validate(question: str, value: Any) -> str:
    """The message Copier would show for `value` ("" = accepted)."""
    env = SandboxedEnvironment(extensions=["jinja2_ansible_filters.AnsibleCoreFiltersExtension"])
    context = {**COMPUTED, "project_name": "Acme Orders", question: value}
    return env.from_string(ASKED[question]["validator"]).render(context).strip()


def test_every_validator_is_exercised() -> None:
    assert set(BAD_VALUES) == {name for name, spec in ASKED.items() if "validator" in spec}


@pytest.mark.parametrize("question", sorted(BAD_VALUES))
def test_every_message_fits_one_line_and_states_the_rule_first(question: str) -> None:
    messages = {validate(question, value) for value in BAD_VALUES[question]}
    assert "" not in messages, f"a bad {question} was accepted"
    # Every `if`/`elif` branch of the validator produced a message.
    branches = len(re.findall(r"\{%-?\s*(?:if|elif)\b", ASKED[question]["validator"]))
    distinct = {re.sub(r'"[^"]*"', '""', message) for message in messages}
    assert len(distinct) == branches
    for message in messages:
        assert len(message) <= MESSAGE_LIMIT, f"{len(message)} characters: {message}"
        assert message.startswith("Must"), message
        assert "\n" not in message


def test_slug_refuses_every_keyword_and_standard_library_module() -> None:
    names = [name for name in keyword.kwlist if SLUG_FORMAT.fullmatch(name)]
    names += [name for name in sorted(sys.stdlib_module_names) if SLUG_FORMAT.fullmatch(name)]
    assert [name for name in names if not validate("project_slug", name)] == []


def test_slug_refuses_the_projects_dependencies() -> None:
    """Each dependency of pyproject.toml.jinja, by its import name (google-* share `google`)."""
    pyproject = (ROOT / "template" / "pyproject.toml.jinja").read_text()
    # Only the two requirement lists (other arrays of the file hold layer names and markers).
    lists = re.findall(r"^(?:dependencies|dev) = \[\n(.*?)^\]", pyproject, flags=re.MULTILINE | re.DOTALL)
    requirements = re.findall(r'^\s+"([A-Za-z0-9][A-Za-z0-9._-]*)', "".join(lists), flags=re.MULTILINE)
    assert "django" in requirements and "mypy" in requirements and "psycopg[binary]" not in requirements
    # Stub-only distributions (types-*) install no importable module; these import by another name.
    import_names = {"import-linter": "importlinter", "django-stubs": "mypy_django_plugin"}
    modules = {
        "google" if name.startswith("google-") else import_names.get(name, name.replace("-", "_"))
        for name in requirements
        if not name.startswith("types-")
    }
    assert sorted(modules - set(COMPUTED["reserved_dependencies"])) == []
    for name in ["django", "whitenoise", "gunicorn", "croniter", "requests", "google", "psycopg"]:
        assert validate("project_slug", name), name


def test_ordinary_slugs_are_accepted() -> None:
    for name in ["orders", "acme_orders", "my_service", "billing2"]:
        assert validate("project_slug", name) == "", name


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


@pytest.mark.parametrize(
    ("answers", "steps"),
    [
        (
            {"database": "postgres", "google_backends": ["cloud_tasks", "cloud_scheduler"]},
            [
                "docker compose up -d --wait db",
                "migrate",
                "createsuperuser",
                "sync_scheduled_tasks",
                "run_tasks",
                "runserver",
            ],
        ),
        (
            {"database": "sqlite", "google_backends": ["cloud_run_jobs"]},
            ["migrate", "createsuperuser", "run_tasks", "runserver"],
        ),
    ],
    ids=["postgres-scheduler", "sqlite-jobs"],
)
def test_next_steps_follow_the_answers(
    template_repo: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    answers: dict[str, Any],
    steps: list[str],
) -> None:
    """Every step the project needs, in order, and none it does not (no database to start for SQLite)."""
    copier.run_copy(
        str(template_repo),
        tmp_path / "service",
        data={**BASE_ANSWERS, **answers},
        vcs_ref=TEMPLATE_TAG,
        defaults=True,
        unsafe=True,
        skip_tasks=True,
    )
    output = capfd.readouterr()
    message = (output.out + output.err).split("Next steps:", 1)[1]
    commands = [
        line.split("#")[0].strip() for line in message.splitlines() if "manage.py" in line or "docker" in line
    ]
    shown = [command.removeprefix("uv run python manage.py ") for command in commands]
    assert [step for step in shown if step in steps or step.startswith("docker")] == steps
    assert len(shown) == len(steps), shown
