"""Fixtures of the template's own tests: a tagged throw-away template repo, rendering, toolchains.

Every test renders from a *copy* of the working tree committed and tagged `v99.0.0`, so the
tests exercise uncommitted work exactly as a user's `copier copy` of a release would see it, and
`copier update` tests can "release" further versions without touching the real repository.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import copier
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS: dict[str, Any] = yaml.safe_load((ROOT / "copier.yml").read_text())
BASE_ANSWERS: dict[str, Any] = {
    "project_name": "Acme Orders",
    "gcp_project_id": "acme-test-123",
    # Skips the `uv lock` task (skip_tasks does not skip migrations; see copier.yml).
    "lock_dependencies": False,
}
TEMPLATE_TAG = "v99.0.0"  # above any real release, so update tests can treat it as "latest"

# The root venv's uv: pyenv's `uv` shim fails inside a project whose .python-version is 3.13.
UV = Path(sys.executable).with_name("uv")

# Named projects that several test modules share; each is rendered and synced once per session.
VARIANTS: dict[str, dict[str, Any]] = {
    "postgres-all": {
        "database": "postgres",
        "google_backends": ["cloud_tasks", "cloud_run_jobs", "cloud_scheduler"],
        "python_version": "3.13",
    },
    "sqlite-tasks": {
        "database": "sqlite",
        "google_backends": ["cloud_tasks", "cloud_scheduler"],
        "python_version": "3.12",
    },
    "sqlite-jobs": {
        "database": "sqlite",
        "google_backends": ["cloud_run_jobs"],
        "python_version": "3.12",
    },
}

# The longest work first. pytest-xdist hands out xdist_group groups and single tests in collection
# order (`--dist loadgroup --no-loadscope-reorder` in pyproject.toml), so what is collected last
# also starts last: the PostgreSQL project's suite (the only one with the google_e2e tests), the
# real-gcloud bootstrap (one long sequential chain of gcloud runs), the SQLite projects' suites,
# then the other slow tests, then the fast ones.
LONGEST_FIRST = ["postgres-all", "bootstrap-gcloud", *sorted(set(VARIANTS) - {"postgres-all"})]


def _start_rank(item: pytest.Item) -> int:
    groups = {str(arg) for marker in item.iter_markers("xdist_group") for arg in marker.args}
    ranks = [LONGEST_FIRST.index(group) for group in groups if group in LONGEST_FIRST]
    if ranks:
        return min(ranks)
    return len(LONGEST_FIRST) + (0 if item.get_closest_marker("slow") else 1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_start_rank)


GIT_ENV = {
    "GIT_AUTHOR_NAME": "Template Tests",
    "GIT_AUTHOR_EMAIL": "tests@example.com",
    "GIT_COMMITTER_NAME": "Template Tests",
    "GIT_COMMITTER_EMAIL": "tests@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def run(
    cmd: Sequence[str | os.PathLike[str]],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on a non-zero exit fail with its output, which is what one needs to debug."""
    argv = [str(part) for part in cmd]
    try:
        result = subprocess.run(
            argv,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        message = f"`{' '.join(argv)}` in {cwd} timed out after {timeout}s"
        raise AssertionError(f"{message}\n{_output(exc)}") from exc
    if result.returncode != 0:
        raise AssertionError(
            f"`{' '.join(argv)}` in {cwd} exited with {result.returncode}\n{_output(result)}"
        )
    return result


def _output(result: subprocess.CompletedProcess[str] | subprocess.TimeoutExpired) -> str:
    def text(value: str | bytes | None) -> str:
        return value.decode(errors="replace") if isinstance(value, bytes) else value or ""

    return f"--- stdout ---\n{text(result.stdout)}\n--- stderr ---\n{text(result.stderr)}"


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """git with a fixed identity and no user/system config, so tests behave the same everywhere."""
    return run(["git", *args], cwd, env={**os.environ, **GIT_ENV})


# PYENV_*: pyenv's shims export the repo's version (3.12), which would hide the project's .python-version.
_LEAKY_VARIABLES = {"VIRTUAL_ENV", "PYENV_VERSION", "PYENV_DIR", "DJANGO_SETTINGS_MODULE", "DATABASE_URL"}


def project_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for commands inside a rendered project.

    The template repo's own virtualenv, Python and pytest state must not leak into the project's `uv run`
    and its pytest; managed-Python downloads are off because CI machines cannot reach them.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _LEAKY_VARIABLES and not key.startswith("PYTEST_")
    }
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env.update(extra or {})
    return env


def uv(
    project: Path, *args: str, env: Mapping[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run the root venv's uv inside a rendered project (see `UV`)."""
    return run([UV, *args], project, env=project_env(env), timeout=timeout)


def working_tree_files(root: Path) -> list[Path]:
    """Tracked and untracked-but-not-ignored files of the working tree (deleted ones left out)."""
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], root).stdout
    names = sorted({name for name in listed.split("\0") if name})
    return [Path(name) for name in names if (root / name).exists() or (root / name).is_symlink()]


def release_script() -> Any:
    """scripts/release.py as a module: the release ledger and the tags made from it."""
    spec = importlib.util.spec_from_file_location("release_script", ROOT / "scripts" / "release.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("release_script", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throw-away git copy of the working tree, committed and tagged `v99.0.0`, that also has
    every release of the ledger (RELEASES.toml) tagged at its commit.

    Git-ignored paths (.venv, caches, ./demo-service) stay out, as they would from a release. The
    release tags are made here, from the ledger and this repository's history, because tags do not
    travel with the repository (a clean clone has none): `copier update` tests from real releases
    then run everywhere. Tags that cannot be made (a shallow clone lacks the commits) are left out;
    the tests that need them fail saying so.
    """
    repo = tmp_path_factory.mktemp("template-repo")
    for relative in working_tree_files(ROOT):
        target = repo / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, target, follow_symlinks=False)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Template under test")
    git(repo, "tag", TEMPLATE_TAG)
    git(repo, "fetch", "-q", "--no-tags", str(ROOT), "HEAD:refs/history/main")
    release = release_script()
    with suppress(release.ReleaseError):
        release.make_tags(repo)
    return repo


Render = Callable[..., Path]


@pytest.fixture(scope="session")
def render(template_repo: Path) -> Render:
    """`render(dst, *, vcs_ref="v99.0.0", src=None, **answers)`: copier copy with BASE_ANSWERS."""

    def _render(dst: Path, *, vcs_ref: str = TEMPLATE_TAG, src: Path | None = None, **answers: Any) -> Path:
        copier.run_copy(
            str(src or template_repo),
            dst,
            data={**BASE_ANSWERS, **answers},
            vcs_ref=vcs_ref,
            defaults=True,
            unsafe=True,
            skip_tasks=True,
            quiet=True,
        )
        return dst

    return _render


@pytest.fixture(scope="session")
def synced_project(render: Render, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """`synced_project(variant_id)`: a VARIANTS project rendered, locked and `uv sync --locked`-ed once.

    Tests share these projects: they may run commands in them but must not modify their files.
    """
    projects: dict[str, Path] = {}

    def _synced(variant_id: str) -> Path:
        if variant_id not in projects:
            dst = render(tmp_path_factory.mktemp(variant_id) / "service", **VARIANTS[variant_id])
            uv(dst, "lock")
            uv(dst, "sync", "--locked")
            projects[variant_id] = dst
        return projects[variant_id]

    return _synced


# --- PostgreSQL --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL server (no database name) where tests may create databases.

    `.ci/run` starts the machine's cluster and exports TEST_POSTGRES_URL; without it a private
    throw-away cluster is started on a free port, so parallel runs on one machine never collide.
    """
    configured = os.environ.get("TEST_POSTGRES_URL")
    if configured:
        yield configured.rstrip("/")
        return
    with _private_postgres() as url:
        yield url


def database_url(server_url: str, name: str) -> str:
    """A DATABASE_URL for database `name` on the server of `postgres_url`."""
    return f"{server_url}/{name}"


@contextmanager
def _private_postgres() -> Iterator[str]:
    """A throw-away cluster: initdb + pg_ctl in a temp dir, as the `postgres` user when run as root."""
    initdb, pg_ctl = _postgres_binary("initdb"), _postgres_binary("pg_ctl")
    base = Path(tempfile.mkdtemp(prefix="template-tests-pg-"))
    data = base / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        account = pwd.getpwnam("postgres")
        os.chown(base, account.pw_uid, account.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    try:
        run([*as_user, initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"], base)
        # fsync off: the cluster is thrown away, durability only costs time.
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        run([*as_user, pg_ctl, "-D", data, "-l", base / "server.log", "-o", options, "-w", "start"], base)
        yield f"postgres://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True, check=False
        )
        shutil.rmtree(base, ignore_errors=True)


def _postgres_binary(name: str) -> str:
    found = shutil.which(name) or next(
        (str(path) for path in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)), None
    )
    if not found:
        pytest.fail(f"PostgreSQL's `{name}` is not installed; install PostgreSQL or set TEST_POSTGRES_URL.")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
