"""`copier update` semantics: what a user with a committed, locally edited project gets from a release.

Each test clones the session's template repo (tagged v99.0.0) so it can publish its own release,
v99.1.0, by committing a change under `template/` and tagging it. Projects are rendered from the
clone, committed, edited like a user would, then updated through Copier's Python API.
Copier reports conflicts without failing, so the tests inspect the result themselves.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import copier
import pytest
import yaml
from plumbum import local

from .conftest import ROOT, TEMPLATE_TAG, UV, Render, git, release_script, run, uv

RELEASE_TAG = "v99.1.0"
# A vendored module that every version has; the edits below work on any content.
VENDORED = "django_tasks_google/apps.py"
SETTINGS = "config/settings.py"
LOCAL_SETTING = 'LOCAL_SETTING = "kept across updates"\n'
MARKERS = ("<<<<<<< before updating", "=======", ">>>>>>> after updating")
# Files a user owns after the first copy (copier.yml `_skip_if_exists`): never equal to a fresh copy.
USER_OWNED = {".env"}

Edit = Callable[[str], str]


# --- Edits: generic, so they keep working while the edited modules evolve ---------------------


def prepend_upstream_note(text: str) -> str:
    return f"# Changed upstream in {RELEASE_TAG}.\n{text}"


def append_local_helper(text: str) -> str:
    return f'{text}\n\ndef local_helper() -> str:\n    """Added by the project."""\n    return "local"\n'


def append_local_setting(text: str) -> str:
    return f"{text}\n{LOCAL_SETTING}"


def tag_first_line(tag: str) -> Edit:
    def edit(text: str) -> str:
        first, rest = text.split("\n", 1)
        return f"{first}  # {tag}\n{rest}"

    return edit


# --- Helpers -----------------------------------------------------------------------------------


@pytest.fixture
def tpl(template_repo: Path, tmp_path: Path) -> Path:
    """A clone of the session's template repo (tags included) that this test may release from."""
    clone = tmp_path / "template"
    git(tmp_path, "clone", "-q", str(template_repo), str(clone))
    return clone


def release(tpl: Path, edits: Mapping[str, Edit | None], tag: str = RELEASE_TAG) -> None:
    """Publish a template release: apply `edits` to files under template/ (None deletes), tag it."""
    for relative, edit in edits.items():
        path = tpl / "template" / relative
        if edit is None:
            git(tpl, "rm", "-q", str(path.relative_to(tpl)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(edit(path.read_text() if path.exists() else ""))
            git(tpl, "add", str(path.relative_to(tpl)))
    git(tpl, "commit", "-q", "-m", f"Release {tag}")
    git(tpl, "tag", tag)


def generate(render: Render, tpl: Path, dst: Path, **answers: Any) -> Path:
    """Render a project from `tpl` and commit it, as `copier update` requires a clean git tree."""
    render(dst, src=tpl, **answers)
    git(dst, "init", "-q", "-b", "main")
    commit_all(dst, "Generate from the template")
    return dst


def commit_all(project: Path, message: str) -> None:
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", message)


def edit_file(project: Path, relative: str, edit: Edit) -> None:
    path = project / relative
    path.write_text(edit(path.read_text()))


def update(project: Path, data: Mapping[str, Any] | None = None, **options: Any) -> None:
    """`copier update --trust --defaults`; the after-update `uv lock` stays off unless data enables it."""
    settings = {"defaults": True, "overwrite": True, "unsafe": True, "skip_tasks": True, "quiet": True}
    copier.run_update(project, data={"lock_dependencies": False, **(data or {})}, **{**settings, **options})


def unmerged(project: Path) -> list[str]:
    return git(project, "diff", "--name-only", "--diff-filter=U").stdout.split()


def rejects(project: Path) -> list[Path]:
    return [path for path in project.rglob("*.rej") if ".git" not in path.relative_to(project).parts]


def answers(project: Path) -> dict[str, Any]:
    return yaml.safe_load((project / ".copier-answers.yml").read_text())


def tree(root: Path) -> dict[str, tuple[bytes, bool]]:
    """Every file of a project (git metadata and user-owned files left out): content and exec bit."""
    files = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and relative.parts[0] != ".git" and relative.as_posix() not in USER_OWNED:
            files[relative.as_posix()] = (path.read_bytes(), os.access(path, os.X_OK))
    return files


# --- Merging local edits with a release --------------------------------------------------------


@pytest.fixture
def merged(render: Render, tpl: Path, tmp_path: Path) -> Path:
    """A project with local edits to a vendored module and settings, updated to a release that
    changes another part of the same module."""
    project = generate(render, tpl, tmp_path / "service")
    edit_file(project, VENDORED, append_local_helper)
    edit_file(project, SETTINGS, append_local_setting)
    commit_all(project, "Local edits")
    release(tpl, {VENDORED: prepend_upstream_note})
    update(project)
    return project


def test_local_edits_and_release_merge_cleanly(merged: Path) -> None:
    vendored = (merged / VENDORED).read_text()
    assert vendored.startswith(f"# Changed upstream in {RELEASE_TAG}.\n")
    assert "def local_helper() -> str:" in vendored
    assert (merged / SETTINGS).read_text().endswith(LOCAL_SETTING)
    assert unmerged(merged) == []
    assert rejects(merged) == []
    assert answers(merged)["_commit"] == RELEASE_TAG


# The merged project's own suite runs in full in tests/test_generated_project.py; here a fast subset
# proves the merge left a working project (settings load, migrations apply, a task enqueues and runs).
MERGED_SUITE_SUBSET = "enqueue or migration or demo"


@pytest.mark.slow
def test_merged_project_passes_its_own_suite(merged: Path) -> None:
    uv(merged, "lock")
    uv(merged, "sync", "--locked")
    # On SQLite: the merge is what is under test, not a PostgreSQL server at .env's default URL.
    sqlite = {"DATABASE_URL": "sqlite:///merged.sqlite3"}
    uv(merged, "run", "python", "manage.py", "check", env=sqlite)
    result = uv(
        merged, "run", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-k", MERGED_SUITE_SUBSET, env=sqlite
    )
    assert re.search(r"\b[1-9][0-9]* passed", result.stdout), result.stdout


def test_same_line_edits_conflict_inline_and_lose_nothing(render: Render, tpl: Path, tmp_path: Path) -> None:
    project = generate(render, tpl, tmp_path / "service")
    original_first_line = (project / VENDORED).read_text().split("\n", 1)[0]
    edit_file(project, VENDORED, tag_first_line("local change"))
    edit_file(project, SETTINGS, append_local_setting)
    commit_all(project, "Local edits")
    release(tpl, {VENDORED: tag_first_line("upstream change")})

    update(project)  # returns normally: conflicts are reported in the tree, not raised

    assert unmerged(project) == [VENDORED]
    assert f"UU {VENDORED}" in git(project, "status", "--porcelain").stdout.splitlines()
    lines = (project / VENDORED).read_text().splitlines()
    start, middle, end = (lines.index(marker) for marker in MARKERS)
    assert start < middle < end
    assert f"{original_first_line}  # local change" in lines[start + 1 : middle]
    assert f"{original_first_line}  # upstream change" in lines[middle + 1 : end]
    assert rejects(project) == []
    # The rest of the update went through: other edits kept, version advanced.
    assert (project / SETTINGS).read_text().endswith(LOCAL_SETTING)
    assert answers(project)["_commit"] == RELEASE_TAG


def test_update_without_local_edits_equals_fresh_copy(render: Render, tpl: Path, tmp_path: Path) -> None:
    project = generate(render, tpl, tmp_path / "service")
    release(
        tpl,
        {
            VENDORED: prepend_upstream_note,
            "django_tasks_google/added_in_release.py": lambda _: '"""New in the release."""\n',
            "django_tasks_google/py.typed": None,
            "config/settings.py.jinja": append_local_setting,
        },
    )
    update(project)
    fresh = render(tmp_path / "fresh", src=tpl, vcs_ref=RELEASE_TAG)

    assert tree(project) == tree(fresh)
    assert not (project / "django_tasks_google/py.typed").exists()
    assert unmerged(project) == []


def test_update_messages_explain_the_merge(
    render: Render, tpl: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    project = generate(render, tpl, tmp_path / "service")
    release(tpl, {VENDORED: prepend_upstream_note})

    update(project, quiet=False)

    stderr = capfd.readouterr().err
    assert "will be re-applied on\ntop of the new template version" in stderr  # before
    assert "Updating to template version 99.1.0" in stderr
    assert "git status        # a file marked UU has conflicts" in stderr  # after
    assert "  <<<<<<< before updating\n" in stderr


def test_update_to_the_current_version_says_so_in_one_line(
    render: Render, tpl: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    project = generate(render, tpl, tmp_path / "service")

    update(project, quiet=False)

    stderr = capfd.readouterr().err
    assert "Keeping template version 99.0.0" in stderr
    assert "re-applied on" not in stderr and "Update applied" not in stderr and "<<<<<<<" not in stderr
    assert unmerged(project) == [] and git(project, "status", "--porcelain").stdout == ""


# --- Answers -----------------------------------------------------------------------------------


def test_changed_answer_rerenders_dependent_files(render: Render, tpl: Path, tmp_path: Path) -> None:
    project = generate(render, tpl, tmp_path / "service", database="postgres")
    edit_file(project, SETTINGS, append_local_setting)
    commit_all(project, "Local edits")

    update(project, {"database": "sqlite"}, vcs_ref=copier.VcsRef.CURRENT)

    settings = (project / SETTINGS).read_text()
    assert 'DATABASE_URL = os.environ.get("DATABASE_URL", f"sqlite:///' in settings
    assert "postgres://postgres:postgres@localhost" not in settings
    assert settings.endswith(LOCAL_SETTING)
    pyproject = (project / "pyproject.toml").read_text()
    dependencies = pyproject.split("[dependency-groups]")[0]
    assert "psycopg" not in dependencies  # only the dev group keeps it, for tests on PostgreSQL
    recorded = answers(project)
    assert (recorded["database"], recorded["_commit"]) == ("sqlite", TEMPLATE_TAG)
    assert unmerged(project) == []


# --- Dependencies: the after-update `uv lock` migration ----------------------------------------


@pytest.fixture
def uv_for_migrations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the migration's `uv lock` find the root venv's uv, as a user's finds theirs, without the
    template repo's VIRTUAL_ENV or managed-Python downloads. Copier runs migrations in plumbum's
    copy of the environment (taken at import), so that copy is the one to patch."""
    monkeypatch.setitem(local.env, "PATH", f"{UV.parent}{os.pathsep}{local.env['PATH']}")
    monkeypatch.delitem(local.env, "VIRTUAL_ENV", raising=False)
    monkeypatch.setitem(local.env, "UV_PYTHON_DOWNLOADS", "never")


def add_template_dependency(requirement: str) -> Edit:
    def edit(text: str) -> str:
        return text.replace("dependencies = [\n", f'dependencies = [\n    "{requirement}",\n', 1)

    return edit


@pytest.mark.slow
@pytest.mark.usefixtures("uv_for_migrations")
def test_user_and_template_dependencies_both_locked(render: Render, tpl: Path, tmp_path: Path) -> None:
    project = generate(render, tpl, tmp_path / "service")
    uv(project, "lock")  # what the copy-time task does
    commit_all(project, "Lock")
    uv(project, "add", "--no-sync", "humanize>=4.0")
    commit_all(project, "Add a dependency")
    release(tpl, {"pyproject.toml.jinja": add_template_dependency("tomli-w>=1.0")})

    update(project, {"lock_dependencies": True})

    pyproject = (project / "pyproject.toml").read_text()
    assert '"humanize>=4.0"' in pyproject
    assert '"tomli-w>=1.0"' in pyproject
    uv(project, "lock", "--check")
    lock = (project / "uv.lock").read_text()
    assert 'name = "humanize"' in lock
    assert 'name = "tomli-w"' in lock
    assert unmerged(project) == []
    assert rejects(project) == []


@pytest.mark.usefixtures("uv_for_migrations")
def test_failed_relock_still_reports_the_conflict(
    render: Render, tpl: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    project = generate(render, tpl, tmp_path / "service")
    edit_file(project, "pyproject.toml", tag_first_line("local change"))
    commit_all(project, "Local edit")
    release(tpl, {"pyproject.toml.jinja": tag_first_line("upstream change")})

    update(project, {"lock_dependencies": True})

    assert unmerged(project) == ["pyproject.toml"]
    stderr = capfd.readouterr().err
    assert "Failed to parse: pyproject.toml" in stderr  # uv ran, and met the conflict markers
    assert "'uv lock' failed" in stderr


# --- Files the user owns -------------------------------------------------------------------------


@pytest.mark.parametrize("change", ["edited", "deleted"])
def test_local_env_file_is_the_users(render: Render, tpl: Path, tmp_path: Path, change: str) -> None:
    project = generate(render, tpl, tmp_path / "service")
    env_file = project / ".env"
    seeded = env_file.read_text()
    if change == "edited":
        env_file.write_text(f"{seeded}DATABASE_URL=sqlite:///local.sqlite3\n")
    else:
        env_file.unlink()
    release(tpl, {".env.jinja": lambda text: f"{text}# Added in {RELEASE_TAG}\n"})

    update(project)

    if change == "edited":
        assert env_file.read_text() == f"{seeded}DATABASE_URL=sqlite:///local.sqlite3\n"
    else:  # recreated from the new version, with a new random secret
        assert f"# Added in {RELEASE_TAG}" in env_file.read_text()


def test_env_file_seeds_a_random_secret(render: Render, tpl: Path, tmp_path: Path) -> None:
    secrets = {
        env_value(render(tmp_path / name, src=tpl) / ".env", "DJANGO_SECRET_KEY") for name in ("a", "b")
    }
    assert len(secrets) == 2
    assert all(len(secret) == 64 for secret in secrets)
    assert "DJANGO_SECRET_KEY" not in answers(tmp_path / "a")


def env_value(env_file: Path, key: str) -> str:
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if line[:1].isalpha())
    return values[key]


def test_manage_py_reads_env_file_locally_only(
    render: Render, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = render(tmp_path / "service")
    spec = importlib.util.spec_from_file_location("generated_manage", project / "manage.py")
    assert spec and spec.loader
    manage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(manage)
    env_file = project / ".env"
    env_file.write_text(
        "# comment\nDJANGO_SECRET_KEY=from-file\nDJANGO_LOG_LEVEL = DEBUG\nTASKS_TARGET=local\n"
    )
    for key in ("DJANGO_SECRET_KEY", "DJANGO_LOG_LEVEL", "TASKS_TARGET", "K_SERVICE", "CLOUD_RUN_JOB"):
        monkeypatch.setenv(key, "unset")  # recorded, so the test's changes are undone afterwards
        monkeypatch.delenv(key)
    monkeypatch.setenv("TASKS_TARGET", "google")

    monkeypatch.setenv("K_SERVICE", "service")
    manage.load_local_env(env_file)
    assert "DJANGO_SECRET_KEY" not in os.environ  # never read on Cloud Run

    monkeypatch.delenv("K_SERVICE")
    manage.load_local_env(env_file)
    assert os.environ["DJANGO_SECRET_KEY"] == "from-file"
    assert os.environ["DJANGO_LOG_LEVEL"] == "DEBUG"
    assert os.environ["TASKS_TARGET"] == "google"  # the real environment wins


# --- Noticing releases and guarding commits ----------------------------------------------------


WORKFLOW = ".github/workflows/template-update.yml"


def check_update_script(project: Path) -> str:
    workflow = yaml.safe_load((project / WORKFLOW).read_text())
    (step,) = [s for s in workflow["jobs"]["check-update"]["steps"] if "check-update" in s.get("run", "")]
    return step["run"]


def test_update_workflow_is_a_valid_github_workflow(render: Render, tmp_path: Path) -> None:
    project = render(tmp_path / "service")
    run([UV.parent / "check-jsonschema", "--builtin-schema", "vendor.github-workflows", WORKFLOW], project)
    workflow = yaml.safe_load((project / WORKFLOW).read_text())
    assert workflow[True]["schedule"]  # YAML 1.1 reads the `on:` key as True


def test_update_workflow_reports_a_new_release(render: Render, tpl: Path, tmp_path: Path) -> None:
    """Runs the workflow's own shell step against a project before and after a release."""
    project = generate(render, tpl, tmp_path / "service")
    summary = tmp_path / "summary.md"
    env = {**os.environ, "PATH": f"{UV.parent}{os.pathsep}{os.environ['PATH']}"}
    env["GITHUB_STEP_SUMMARY"] = str(summary)
    script = check_update_script(project)

    up_to_date = subprocess.run(
        ["bash", "-e", "-c", script], cwd=project, env=env, capture_output=True, text=True
    )
    assert up_to_date.returncode == 0, up_to_date.stderr
    assert "up to date" in up_to_date.stdout

    release(tpl, {VENDORED: prepend_upstream_note})
    outdated = subprocess.run(
        ["bash", "-e", "-c", script], cwd=project, env=env, capture_output=True, text=True
    )
    assert outdated.returncode == 1, outdated.stderr
    assert "::warning title=Template update available::" in outdated.stdout
    assert "latest version is 99.1.0" in summary.read_text()


def test_pre_commit_config_blocks_unresolved_updates(render: Render, tmp_path: Path) -> None:
    project = render(tmp_path / "service")
    repos = yaml.safe_load((project / ".pre-commit-config.yaml").read_text())["repos"]
    hooks = {hook["id"]: hook for repo in repos for hook in repo["hooks"]}
    assert "--assume-in-merge" in hooks["check-merge-conflict"]["args"]
    rej_pattern = re.compile(hooks["forbid-rej-files"]["files"])
    assert hooks["forbid-rej-files"]["language"] == "fail"
    assert rej_pattern.search("django_tasks_google/models.py.rej")
    assert not rej_pattern.search("django_tasks_google/models.py")


def test_no_generated_file_looks_conflicted(render: Render, tmp_path: Path) -> None:
    """check-merge-conflict flags lines *starting* with markers; docs may show them only indented."""
    project = render(tmp_path / "service")
    flagged = [
        f"{path.relative_to(project)}:{number}"
        for path in project.rglob("*")
        if path.is_file()
        for number, line in enumerate(path.read_bytes().splitlines(), 1)
        if line.startswith((b"<<<<<<< ", b">>>>>>> ")) or line == b"======="
    ]
    assert flagged == []


# --- Upgrading from this repository's real releases --------------------------------------------


def ledger_releases(limit: int = 3) -> list[str]:
    """The newest release tags of the release ledger (RELEASES.toml), newest first."""
    releases = release_script().load_ledger(ROOT)
    return [release.tag for release in reversed(releases)][:limit]


def add_local_dependency(text: str) -> str:
    """The project's own dependency, first in the list (where template changes rarely land)."""
    return text.replace("dependencies = [\n", 'dependencies = [\n    "humanize>=4.0",\n', 1)


@pytest.mark.parametrize("tag", ledger_releases())
def test_upgrade_from_release_keeps_local_edits(tag: str, render: Render, tpl: Path, tmp_path: Path) -> None:
    """From each recent release of the ledger to the working tree, on a project with local edits to
    the vendored app, the settings and the dependencies, and a module of its own: the edits survive,
    nothing conflicts, and every other file matches a fresh copy (which also proves that every
    question added since has a usable default)."""
    if not git(tpl, "tag", "--list", tag).stdout.strip():
        pytest.fail(
            f"{tag} could not be tagged from the ledger: is this a shallow clone? (git fetch --unshallow)"
        )
    project = generate(render, tpl, tmp_path / "service", vcs_ref=tag)
    own_module = project / "acme_orders" / "reports.py"
    own_module.write_text('"""The project\'s own code."""\n')
    edit_file(project, VENDORED, append_local_helper)
    edit_file(project, SETTINGS, append_local_setting)
    edit_file(project, "pyproject.toml", add_local_dependency)
    commit_all(project, "Own code and local edits")

    update(project, vcs_ref=TEMPLATE_TAG)

    assert unmerged(project) == []
    assert rejects(project) == []
    assert answers(project)["_commit"] == TEMPLATE_TAG
    fresh = render(tmp_path / "fresh", src=tpl)
    edited = {VENDORED, SETTINGS, "pyproject.toml"}
    assert "def local_helper() -> str:" in (project / VENDORED).read_text()
    assert (project / SETTINGS).read_text().endswith(LOCAL_SETTING)
    assert '    "humanize>=4.0",\n' in (project / "pyproject.toml").read_text()
    for relative in edited:
        # Everything but the local edit is the new release's.
        assert (project / relative).read_text().replace(LOCAL_SETTING, "").replace(
            '    "humanize>=4.0",\n', ""
        ).split("\n\ndef local_helper()")[0].rstrip("\n") == (fresh / relative).read_text().rstrip("\n")
    expected = {path: content for path, content in tree(fresh).items() if path not in edited}
    actual = {path: content for path, content in tree(project).items() if path not in edited}
    assert actual == {**expected, "acme_orders/reports.py": (own_module.read_bytes(), False)}
