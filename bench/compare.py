"""Ours vs the published django-tasks-google 0.6.0 vs django-tasks-db, side by side in one run.

    uv run python bench/compare.py [--quick] [--rounds N] [--databases sqlite,postgres] [--keep DIR]

Builds three throw-away environments with the same Python and Django: the service rendered from
this working tree ("ours", see scripts/service.py), and uv virtualenvs with
django-tasks-google 0.6.0 ("published") and django-tasks-db ("db-tasks") from PyPI, each with the
small project in bench/site/. It starts a private PostgreSQL cluster, then, per round and per
database, measures the three one after the other (interleaved, so a load spike hits all three
alike) with bench/inside/compare.py. It prints the medians over the rounds, the ratios, and the
noise: the CPU that processes other than the measured ones used while the rounds ran.

Timing never fails anything; the exit code is non-zero only when something did not work.
"""

import argparse
import json
import os
import pwd
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from harness import INSIDE, UV, print_table, render, service_env

BENCH = Path(__file__).resolve().parent
SITE = BENCH / "site"
SUBJECTS = ["ours", "published", "dbtasks"]
LABELS = {"ours": "ours", "published": "published 0.6.0", "dbtasks": "django-tasks-db"}
PACKAGES = {
    "published": ["django-tasks-google==0.6.0", "croniter"],
    "dbtasks": ["django-tasks-db==0.13.0"],
}
# cryptography: the test OIDC issuer, which mints tokens in every subject's push measurement.
COMMON_PACKAGES = ["psycopg[binary]", "dj-database-url", "gunicorn", "requests", "cryptography"]
# rounds; enqueues timed; tasks per drain; drain window (s); latency probes; idle settle (s);
# push: in-process requests per endpoint, seconds of load per endpoint under gunicorn
FULL = {"rounds": 2, "enqueues": 300, "tasks": 200, "window": 4.0, "probes": 10, "settle": 6.0}
FULL |= {"requests": 200, "seconds": 3.0}
QUICK = {"rounds": 1, "enqueues": 100, "tasks": 60, "window": 1.0, "probes": 3, "settle": 6.0}
QUICK |= {"requests": 30, "seconds": 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer tasks, shorter windows, one round")
    parser.add_argument("--rounds", type=int, help="rounds (default: 2, 1 with --quick)")
    parser.add_argument("--databases", default="sqlite,postgres", help="default: sqlite,postgres")
    parser.add_argument("--concurrency", help="drain concurrencies (default: 1,2,4; 2 with --quick)")
    parser.add_argument("--no-push", action="store_true", help="skip the push path (/tasks/execute/)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="build the environments here and reuse them")
    args = parser.parse_args()
    sizes = dict(QUICK if args.quick else FULL)
    sizes["rounds"] = args.rounds or sizes["rounds"]
    concurrency = args.concurrency or ("2" if args.quick else "1,2,4")
    databases = args.databases.split(",")

    began = time.monotonic()
    with workdir(args.keep) as work:
        envs = build_environments(work)
        with private_postgres() if "postgres" in databases else nullcontext() as postgres:
            urls = prepare_databases(work, envs, databases, postgres)
            rounds, noise = [], []
            for number in range(sizes["rounds"]):
                sample = CpuSample(postgres)
                results: dict[str, dict[str, dict]] = {database: {} for database in databases}
                # Each round starts with another subject: a load trend favours none of them.
                order = SUBJECTS[number % 3 :] + SUBJECTS[: number % 3]
                for database in databases:
                    for subject in order:
                        print(
                            f"round {number + 1}: {database}, {LABELS[subject]} "
                            f"({time.monotonic() - began:.0f} s)",
                            file=sys.stderr,
                        )
                        results[database][subject] = run_round(
                            envs[subject], subject, urls[database][subject], sizes, concurrency
                        )
                        if not args.no_push:
                            results[database][subject]["push"] = run_push(
                                envs, subject, urls[database][subject], sizes
                            )
                rounds.append(results)
                noise.append(sample.noise())
    print_report(rounds, noise, databases, concurrency, sizes, not args.no_push, time.monotonic() - began)


@contextmanager
def workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        yield Path(tmp)


def build_environments(work: Path) -> dict[str, dict]:
    """The three interpreters, with the same Python and Django version; each built once per DIR."""
    ours = work / "ours"
    render(ours)  # always: the working tree is what is measured, also in a kept DIR
    python = ours / ".venv" / "bin" / "python"
    (ours / "staticfiles").mkdir(exist_ok=True)  # WhiteNoise warns on every start without it
    django_version = subprocess.check_output(
        [python, "-c", "import django; print(django.__version__)"], text=True
    )
    interpreter = python.resolve()  # the venv's base interpreter: the very same Python for all three
    envs = {"ours": {"python": python, "manage": ours / "manage.py", "path": [SITE, ours]}}
    for subject, packages in PACKAGES.items():
        venv = work / subject
        wanted = " ".join([f"django=={django_version.strip()}", *COMMON_PACKAGES, *packages])
        ready = venv / "ready"  # what was installed: a changed list rebuilds a kept environment
        if not ready.exists() or ready.read_text() != wanted:
            print(f"Installing {' '.join(packages)} into {venv}", file=sys.stderr)
            shutil.rmtree(venv, ignore_errors=True)
            env = service_env()
            subprocess.run([UV, "venv", "--quiet", "-p", interpreter, venv], env=env, check=True)
            subprocess.run(
                [
                    UV,
                    "pip",
                    "install",
                    "--quiet",
                    "-p",
                    venv / "bin" / "python",
                    f"django=={django_version.strip()}",
                    *COMMON_PACKAGES,
                    *packages,
                ],
                env=env,
                check=True,
            )
            ready.write_text(wanted)
        envs[subject] = {"python": venv / "bin" / "python", "manage": SITE / "manage.py", "path": [SITE]}
    return envs


def subject_env(env: dict, subject: str, database_url: str) -> dict[str, str]:
    return service_env() | {
        "DJANGO_SETTINGS_MODULE": f"settings_{subject}",
        "PYTHONPATH": os.pathsep.join(str(path) for path in env["path"]),
        "DATABASE_URL": database_url,
        "TASKS_TARGET": "local",
        "GRPC_VERBOSITY": "ERROR",
        # The service refuses to start without a key unless DJANGO_DEBUG is on; a bench runs with DEBUG off.
        "DJANGO_SECRET_KEY": "bench-only-" + "k" * 50,
    }


def prepare_databases(work: Path, envs: dict, databases: list[str], postgres: str | None) -> dict:
    """A fresh, migrated database per subject and database kind."""
    urls: dict[str, dict[str, str]] = {}
    for database in databases:
        urls[database] = {}
        for subject in SUBJECTS:
            if database == "sqlite":
                path = work / f"{subject}.sqlite3"
                path.unlink(missing_ok=True)
                url = f"sqlite:///{path}"
            else:
                subprocess.run(
                    [
                        *postgres_as_user(),
                        postgres_binary("createdb"),
                        "-h",
                        "127.0.0.1",
                        "-p",
                        postgres.rsplit(":", 1)[1],
                        "-U",
                        "postgres",
                        f"bench_{subject}",
                    ],
                    check=True,
                )
                url = f"{postgres}/bench_{subject}"
            env = envs[subject]
            subprocess.run(
                [env["python"], env["manage"], "migrate", "--verbosity", "0"],
                env=subject_env(env, subject, url),
                cwd=Path(env["manage"]).parent,
                check=True,
            )
            urls[database][subject] = url
    return urls


def run_push(envs: dict, subject: str, database_url: str, sizes: dict) -> dict:
    env = envs[subject]
    fakes = Path(envs["ours"]["manage"]).parent / "tests" / "fakes"  # the issuer all three verify
    argv = [
        env["python"],
        INSIDE / "push.py",
        "--subject",
        subject,
        "--fakes",
        fakes,
        "--requests",
        str(sizes["requests"]),
        "--seconds",
        str(sizes["seconds"]),
    ]
    return run_json(argv, env, subject, database_url)


def run_json(argv: list, env: dict, subject: str, database_url: str) -> dict:
    """Run an inside script with the subject's interpreter; the JSON line it prints last."""
    completed = subprocess.run(
        [str(arg) for arg in argv],
        env=subject_env(env, subject, database_url),
        cwd=Path(env["manage"]).parent,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        sys.exit(f"{Path(argv[1]).name} failed for {subject} (exit code {completed.returncode})")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run_round(env: dict, subject: str, database_url: str, sizes: dict, concurrency: str) -> dict:
    argv = [
        env["python"],
        INSIDE / "compare.py",
        "--subject",
        subject,
        "--manage",
        env["manage"],
        "--enqueues",
        str(sizes["enqueues"]),
        "--tasks",
        str(sizes["tasks"]),
        "--window",
        str(sizes["window"]),
        "--concurrency",
        concurrency,
        "--probes",
        str(sizes["probes"]),
        "--settle",
        str(sizes["settle"]),
    ]
    return run_json(argv, env, subject, database_url)


# --- PostgreSQL ----------------------------------------------------------------------------------


def postgres_binary(name: str) -> str:
    found = shutil.which(name) or next(
        (str(path) for path in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)), None
    )
    if not found:
        sys.exit(f"PostgreSQL's `{name}` is not installed (or use --databases sqlite)")
    return found


def postgres_as_user() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses root


@contextmanager
def private_postgres() -> Iterator[str]:
    """A throw-away cluster (initdb + pg_ctl, fsync off) on a free port: nobody else's queries in it."""
    base = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(base, account.pw_uid, account.pw_gid)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = base / "data"
    try:
        subprocess.run(
            [
                *postgres_as_user(),
                postgres_binary("initdb"),
                "-D",
                data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
            cwd=base,
            check=True,
            capture_output=True,
        )
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        subprocess.run(
            [
                *postgres_as_user(),
                postgres_binary("pg_ctl"),
                "-D",
                data,
                "-l",
                base / "server.log",
                "-o",
                options,
                "-w",
                "start",
            ],
            cwd=base,
            check=True,
            capture_output=True,
        )
        yield f"postgres://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*postgres_as_user(), postgres_binary("pg_ctl"), "-D", data, "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(base, ignore_errors=True)


# --- noise ---------------------------------------------------------------------------------------


class CpuSample:
    """Machine-wide busy CPU (/proc/stat) minus the CPU of the measured processes, over a round.

    Measured = every process this script waited for (the inside runs and the workers they
    reaped: RUSAGE_CHILDREN) plus the private PostgreSQL server (postmaster and its backends).
    A process a worker left behind unreaped counts as noise, so the figure errs on the high side.
    """

    def __init__(self, postgres: str | None) -> None:
        self.postmaster = postmaster_pid(postgres) if postgres else None
        self.start = self.read()

    def read(self) -> tuple[float, float, float, float]:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        tick = os.sysconf("SC_CLK_TCK")
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / tick  # all but idle and iowait
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        measured = children.ru_utime + children.ru_stime + postgres_cpu(self.postmaster)
        return time.monotonic(), busy, measured, tick

    def noise(self) -> dict[str, float]:
        (t0, busy0, measured0, _), (t1, busy1, measured1, _) = self.start, self.read()
        cores = os.cpu_count() or 1
        other = max(0.0, (busy1 - busy0) - (measured1 - measured0))
        return {
            "seconds": t1 - t0,
            "other_cores": other / (t1 - t0),
            "other_percent": 100 * other / ((t1 - t0) * cores),
            "measured_percent": 100 * (measured1 - measured0) / ((t1 - t0) * cores),
        }


def postmaster_pid(url: str) -> int | None:
    port = url.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and cmdline[0].endswith(b"postgres") and f"-p {port}".encode() in b" ".join(cmdline):
                return int(entry.name)
    return None


def postgres_cpu(pid: int | None) -> float:
    """CPU seconds of the postmaster, its live children and the ones it reaped."""
    if pid is None:
        return 0.0
    total = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(entry.name) == pid:
                total += sum(int(value) for value in fields[11:15])
            elif int(fields[1]) == pid:
                total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


# --- the table -----------------------------------------------------------------------------------


def median(rounds: list[dict], database: str, subject: str, *keys: str) -> float | None:
    """The median over the rounds of one figure; None where the subject has no such thing."""
    values = []
    for results in rounds:
        value = results[database][subject]
        for key in keys:
            value = value.get(key) if value is not None else None
        if value is None:
            return None
        values.append(value)
    return statistics.median(values)


def ratio_text(numerators: list[float | None], denominators: list[float | None]) -> str:
    ratios = [n / d for n, d in zip(numerators, denominators, strict=True) if n is not None and d]
    if not ratios:
        return "-"
    if len(ratios) == 1 or min(ratios) == max(ratios):
        return f"{ratios[0]:.2f}x"
    return f"{min(ratios):.2f}-{max(ratios):.2f}x"


def print_report(
    rounds: list, noise: list, databases: list[str], concurrency: str, sizes: dict, push: bool, elapsed: float
) -> None:
    levels = concurrency.split(",")
    rows = []

    def row(
        label: str, keys_list: list[tuple[str, ...]], database: str, digits: int = 1, bare: str = ""
    ) -> None:
        values = {s: [median(rounds, database, s, *keys) for keys in keys_list] for s in SUBJECTS}
        cells = [" / ".join("-" if v is None else f"{v:.{digits}f}" for v in values[s]) for s in SUBJECTS]
        ratios = [ratio_text(values["ours"], values[other]) for other in ("published", "dbtasks")]
        # Ours against the bare INSERT view measured in ours' own environment, same round.
        floor = ratio_text(values["ours"], [median(rounds, database, "ours", "push", bare)]) if bare else ""
        rows.append([label, *cells, *ratios, floor])

    for database in databases:
        db = "PostgreSQL" if database == "postgres" else "SQLite"
        row(f"enqueue, {db} (tasks/s)", [("enqueue", "rate")], database, 0)
        row(f"SQL statements per enqueue, {db}", [("enqueue", "statements")], database, 0)
        for kind, label in [("noop", "no-op"), ("sleep_50ms", "sleep(50 ms)")]:
            row(
                f"drain, {label}, conc. {' / '.join(levels)}, {db} (tasks/s)",
                [("drain", kind, level, "rate") for level in levels],
                database,
            )
        row(
            f"worker CPU per no-op task, conc. {levels[0]}, {db} (ms)",
            [("drain", "noop", levels[0], "cpu_ms_per_task")],
            database,
        )
        row(f"idle worker RSS, {db} (MB)", [("idle", "rss_mb")], database, 0)
        row(f"idle worker PSS (shared pages split), {db} (MB)", [("idle", "pss_mb")], database, 0)
        row(f"idle worker processes, {db}", [("idle", "processes")], database, 0)
        row(f"e2e latency, idle worker, poll 0.1 s, {db} (ms)", [("idle", "latency_ms")], database, 0)
        row(f"e2e latency, first task after 6 s idle, {db} (ms)", [("idle", "first_latency_ms")], database, 0)
        if push:
            row(
                f"/tasks/execute/ in-process, {db} (ms/request)",
                [("push", "execute_ms")],
                database,
                2,
                "bare_ms",
            )
            row(f"bare INSERT view in-process, {db} (ms/request)", [("push", "bare_ms")], database, 2)
            row(
                f"/tasks/execute/, gunicorn -w 2, {db} (req/s)",
                [("push", "execute_rps")],
                database,
                0,
                "bare_rps",
            )
            row(f"bare INSERT view, gunicorn -w 2, {db} (req/s)", [("push", "bare_rps")], database, 0)

    print(
        f"\nMedians of {len(rounds)} round(s); drains: {sizes['tasks']} tasks enqueued, throughput and CPU "
        f"measured from the first task done over {sizes['window']} s (or until all done).\n"
    )
    headers = ["figure", *(LABELS[s] for s in SUBJECTS), "ours/published", "ours/db-tasks", "ours/bare"]
    print_table(headers, rows)
    print("\nNoise (CPU of processes other than the measured ones, while the rounds ran):\n")
    print_table(
        ["round", "seconds", "other processes (cores)", "other (% of machine)", "measured (% of machine)"],
        [
            [
                str(number + 1),
                f"{n['seconds']:.0f}",
                f"{n['other_cores']:.2f}",
                f"{n['other_percent']:.0f}%",
                f"{n['measured_percent']:.0f}%",
            ]
            for number, n in enumerate(noise)
        ],
    )
    print(
        f"\n{os.cpu_count()} CPU cores; whole run {elapsed:.0f} s. Compare ratios within one run only; with "
        "noise above ~10% of the machine, no ratio settles a target."
    )


if __name__ == "__main__":
    main()
