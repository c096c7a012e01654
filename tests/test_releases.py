"""The release ledger (RELEASES.toml) and scripts/release.py, which cuts releases and makes tags.

The ledger must be true of this repository: each release's commit is in the history of HEAD (so
a clean clone of main has it), versions increase, and each release has its CHANGELOG section, in
the release commit itself too. `release.py --tag` on a clean clone (no tags) recreates every
release tag at its ledger commit, and cutting a release records it in CHANGELOG, ledger and tag.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import GIT_ENV, ROOT, git, release_script


def test_the_ledger_is_true_of_this_repository() -> None:
    release = release_script()
    assert release.load_ledger(ROOT), "the ledger lists no release"
    assert release.ledger_problems(ROOT) == []


@pytest.fixture
def clean_clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clone of this repository's HEAD with no tags, as CI and most copies of it have; commits
    made in it (by release.cut too) get the tests' fixed identity."""
    for name, value in GIT_ENV.items():
        monkeypatch.setenv(name, value)
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--no-tags", str(ROOT), str(clone))
    assert git(clone, "tag", "--list").stdout == ""
    # The working tree's ledger, changelog and script, which may not be committed yet.
    for relative in ("RELEASES.toml", "CHANGELOG.md", "scripts/release.py"):
        (clone / relative).write_text((ROOT / relative).read_text())
    git(clone, "add", "-A")
    if git(clone, "status", "--porcelain").stdout:
        git(clone, "commit", "-q", "-m", "The working tree's release files")
    return clone


def test_tag_recreates_every_release_tag_at_its_ledger_commit(clean_clone: Path) -> None:
    result = subprocess.run(
        [sys.executable, "scripts/release.py", "--tag"],
        cwd=clean_clone,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    for release in release_script().load_ledger(clean_clone):
        assert git(clean_clone, "rev-parse", f"{release.tag}^{{commit}}").stdout.strip() == release.commit
    again = subprocess.run(
        [sys.executable, "scripts/release.py", "--tag"], cwd=clean_clone, capture_output=True, text=True
    )
    assert "every ledger release is tagged already" in again.stdout


def test_a_tag_at_another_commit_is_refused(clean_clone: Path) -> None:
    first = release_script().load_ledger(clean_clone)[0]
    git(clean_clone, "tag", first.tag, "HEAD")
    release = release_script()
    with pytest.raises(release.ReleaseError, match="points at"):
        release.make_tags(clean_clone)


def test_cutting_a_release_records_changelog_ledger_and_tag(clean_clone: Path) -> None:
    release = release_script()
    changelog = clean_clone / "CHANGELOG.md"
    changelog.write_text(
        changelog.read_text().replace("## [Unreleased]", "## [Unreleased]\n\n- A change.", 1)
    )
    git(clean_clone, "commit", "-q", "-am", "A change")
    last = release.load_ledger(clean_clone)[-1]
    major = last.key[0]
    version = f"{major + 1}.0.0"

    cut = release.cut(version, clean_clone, today=datetime.date(2030, 1, 2))

    assert cut.commit == git(clean_clone, "rev-parse", "HEAD~1").stdout.strip()
    assert git(clean_clone, "log", "-1", "--format=%s", cut.commit).stdout.strip() == f"Release v{version}"
    assert f"## [Unreleased]\n\n## v{version} - 2030-01-02\n\n- A change." in changelog.read_text()
    assert release.load_ledger(clean_clone)[-1] == cut
    assert git(clean_clone, "rev-parse", f"v{version}^{{commit}}").stdout.strip() == cut.commit
    assert release.ledger_problems(clean_clone) == []


def test_cutting_refuses_an_older_release_an_empty_one_and_a_dirty_tree(clean_clone: Path) -> None:
    release = release_script()
    last = release.load_ledger(clean_clone)[-1]
    with pytest.raises(release.ReleaseError, match="must come after"):
        release.cut(last.version, clean_clone)
    stray = clean_clone / "stray.txt"
    stray.write_text("not committed\n")
    with pytest.raises(release.ReleaseError, match="uncommitted"):
        release.cut("99.0.0", clean_clone)
    stray.unlink()
    changelog = clean_clone / "CHANGELOG.md"
    head, _, rest = changelog.read_text().partition("## [Unreleased]")
    changelog.write_text(head + "## [Unreleased]\n\n## " + rest.split("\n## ", 1)[1])
    git(clean_clone, "commit", "-q", "--allow-empty", "-am", "Nothing unreleased")
    with pytest.raises(release.ReleaseError, match="empty"):
        release.cut("99.0.0", clean_clone)
