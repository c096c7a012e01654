"""Cut releases of this template, and make its git tags from the release ledger (RELEASES.toml).

    uv run python scripts/release.py --tag     # create every missing vX.Y.Z tag at its ledger commit
    uv run python scripts/release.py --check   # verify the ledger against the history and CHANGELOG.md
    uv run python scripts/release.py 0.2.0     # cut v0.2.0 from a clean checkout of main

Why a ledger: tags live outside the branch, and copies of a repository often arrive without them
(a clone of one branch, a mirror, a re-import); a release that exists only as a tag is lost there.
The ledger is a file on main, so every copy knows every release, and `--tag` recreates the tags.

Cutting makes two commits. "Release vX.Y.Z" turns CHANGELOG.md's Unreleased section into the
release's section: that commit is the release, its tree is what `copier copy` of vX.Y.Z renders.
The next commit records the release's commit in RELEASES.toml (a commit cannot contain its own
hash). Then the tag is created locally, and publishing is pushing main (and the tag, where the
hosting keeps tags).
"""

from __future__ import annotations

import argparse
import datetime
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEDGER = "RELEASES.toml"
CHANGELOG = "CHANGELOG.md"
VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")
UNRELEASED = "## [Unreleased]"


class ReleaseError(Exception):
    """Something is wrong with the ledger, the checkout or the requested release; the message says what."""


@dataclass(frozen=True)
class Release:
    version: str
    commit: str
    date: str

    @property
    def tag(self) -> str:
        return f"v{self.version}"

    @property
    def key(self) -> tuple[int, int, int]:
        return version_key(self.version)


def version_key(version: str) -> tuple[int, int, int]:
    match = VERSION.fullmatch(version)
    if match is None:
        raise ReleaseError(f"{version!r} is not a version of the form X.Y.Z")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def git(root: Path, *args: str, check: bool = True) -> str:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise ReleaseError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip() if result.returncode == 0 else ""


def load_ledger(root: Path = ROOT) -> list[Release]:
    """The releases recorded in the ledger, in the order they were cut."""
    data = tomllib.loads((root / LEDGER).read_text())
    return [
        Release(str(entry["version"]), str(entry["commit"]), str(entry["date"])) for entry in data["release"]
    ]


def ledger_problems(root: Path = ROOT) -> list[str]:
    """Everything untrue about the ledger: commits missing from HEAD's history, versions out of order,
    releases without their CHANGELOG section (in the release commit itself and in the current one)."""
    problems: list[str] = []
    releases = load_ledger(root)
    changelog = (root / CHANGELOG).read_text()
    previous: Release | None = None
    for release in releases:
        try:
            key = release.key
        except ReleaseError as exc:
            problems.append(str(exc))
            continue
        if previous is not None and key <= previous.key:
            problems.append(f"{release.tag} does not come after {previous.tag}")
        previous = release
        if not re.fullmatch(r"[0-9a-f]{40}", release.commit):
            problems.append(f"{release.tag}: {release.commit!r} is not a full commit hash")
            continue
        if not _exists(root, release.commit):
            problems.append(f"{release.tag}: commit {release.commit} is not in this repository")
            continue
        if not _is_ancestor(root, release.commit, "HEAD"):
            problems.append(f"{release.tag}: commit {release.commit} is not in the history of HEAD")
        heading = f"## v{release.version} - {release.date}"
        if heading not in changelog:
            problems.append(f"{release.tag}: {CHANGELOG} has no section {heading!r}")
        released = git(root, "show", f"{release.commit}:{CHANGELOG}", check=False)
        if heading not in released:
            problems.append(f"{release.tag}: the release commit's {CHANGELOG} has no section {heading!r}")
    return problems


def _exists(root: Path, commit: str) -> bool:
    return (
        subprocess.run(
            ["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=root, capture_output=True
        ).returncode
        == 0
    )


def _is_ancestor(root: Path, commit: str, head: str) -> bool:
    return (
        subprocess.run(
            ["git", "merge-base", "--is-ancestor", commit, head], cwd=root, capture_output=True
        ).returncode
        == 0
    )


def make_tags(root: Path = ROOT) -> list[str]:
    """Create the missing tag of every ledger release at its commit; returns the tags created.

    Lightweight tags, so no git identity is needed (CI machines have none). A tag that exists at
    another commit is an error: tags are never moved (projects record them, see CONTRIBUTING.md).
    """
    created = []
    for release in load_ledger(root):
        if not _exists(root, release.commit):
            raise ReleaseError(
                f"{release.tag}: commit {release.commit} is not in this repository (a shallow clone?)"
            )
        existing = git(
            root, "rev-parse", "-q", "--verify", f"refs/tags/{release.tag}^{{commit}}", check=False
        )
        if existing == release.commit:
            continue
        if existing:
            raise ReleaseError(
                f"tag {release.tag} points at {existing}, but the ledger says {release.commit}"
            )
        git(root, "tag", release.tag, release.commit)
        created.append(release.tag)
    return created


def cut(version: str, root: Path = ROOT, today: datetime.date | None = None) -> Release:
    """Cut `version` from a clean checkout: CHANGELOG section, release commit, ledger entry, tag."""
    key = version_key(version)
    releases = load_ledger(root)
    if releases and key <= releases[-1].key:
        raise ReleaseError(f"v{version} must come after the last release, {releases[-1].tag}")
    if git(root, "status", "--porcelain"):
        raise ReleaseError("the working tree has uncommitted changes: commit or stash them first")
    changelog_path = root / CHANGELOG
    changelog = changelog_path.read_text()
    if UNRELEASED not in changelog:
        raise ReleaseError(f"{CHANGELOG} has no {UNRELEASED!r} section")
    unreleased = changelog.split(UNRELEASED, 1)[1].split("\n## ", 1)[0]
    if not unreleased.strip():
        raise ReleaseError(f"{CHANGELOG}'s Unreleased section is empty: nothing to release")
    date = (today or datetime.date.today()).isoformat()
    changelog_path.write_text(changelog.replace(UNRELEASED, f"{UNRELEASED}\n\n## v{version} - {date}", 1))
    git(root, "commit", "-q", "-m", f"Release v{version}", "--", CHANGELOG)
    release = Release(version, git(root, "rev-parse", "HEAD"), date)
    with (root / LEDGER).open("a") as ledger:
        ledger.write(f'\n[[release]]\nversion = "{version}"\ncommit = "{release.commit}"\ndate = "{date}"\n')
    git(root, "commit", "-q", "-m", f"Release ledger: v{version} is {release.commit[:12]}", "--", LEDGER)
    make_tags(root)
    return release


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("version", nargs="?", help="cut this release (X.Y.Z)")
    action.add_argument("--tag", action="store_true", help="create the missing tags from the ledger")
    action.add_argument("--check", action="store_true", help="verify the ledger")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = ledger_problems()
            for problem in problems:
                print(f"release ledger: {problem}", file=sys.stderr)
            if not problems:
                print(f"release ledger: {len(load_ledger())} release(s), all true")
            return 1 if problems else 0
        if args.tag:
            created = make_tags()
            print(f"created {', '.join(created)}" if created else "every ledger release is tagged already")
            return 0
        release = cut(args.version)
    except ReleaseError as exc:
        print(f"release.py: {exc}", file=sys.stderr)
        return 1
    print(
        f"Released {release.tag} at {release.commit[:12]} (ledger entry committed, tag created).\n"
        f"Publish: git push origin main {release.tag}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
