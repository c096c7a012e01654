"""bench/compare.py imports and prints its table: a smoke test. Benchmarks never run in the suite."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def compare(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCH))  # compare.py imports its sibling harness.py
    spec = importlib.util.spec_from_file_location("bench_compare", BENCH / "compare.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_compare", module)
    spec.loader.exec_module(module)
    return module


def one_round(enqueue_rate: float, execute_ms: float | None, bare_ms: float) -> dict:
    """The shape bench/inside/*.py print, with made-up figures."""
    drain = {"rate": 10.0, "cpu_ms_per_task": 5.0, "startup_s": 1.0, "measured_tasks": 9}
    push = {"bare_ms": bare_ms, "bare_rps": 100.0}
    if execute_ms is not None:
        push |= {"execute_ms": execute_ms, "execute_rps": 50.0}
    return {
        "enqueue": {"rate": enqueue_rate, "statements": 1},
        "drain": {"noop": {"2": drain}, "sleep_50ms": {"2": drain}},
        "idle": {"rss_mb": 50.0, "processes": 1, "latency_ms": 20.0},
        "push": push,
    }


def test_the_table_shows_ratios_to_both_packages_and_to_the_bare_view(compare, capsys) -> None:
    results = {
        "sqlite": {
            "ours": one_round(400.0, 3.0, 1.5),
            "published": one_round(200.0, 6.0, 1.5),
            "dbtasks": one_round(800.0, None, 1.5),
        }
    }
    noise = [{"seconds": 60.0, "other_cores": 0.1, "other_percent": 5.0, "measured_percent": 90.0}]

    compare.print_report([results], noise, ["sqlite"], "2", compare.QUICK, True, 61.0)

    lines = capsys.readouterr().out.splitlines()
    enqueue = next(line for line in lines if line.startswith("enqueue, SQLite"))
    assert enqueue.split()[-2:] == ["2.00x", "0.50x"]  # ours/published, ours/db-tasks
    execute = next(line for line in lines if line.startswith("/tasks/execute/ in-process"))
    assert execute.split()[-3:] == ["0.50x", "-", "2.00x"]  # db-tasks has no push endpoint


@pytest.mark.parametrize("path", sorted(BENCH.rglob("*.py")), ids=lambda path: str(path.relative_to(BENCH)))
def test_every_bench_file_compiles(path: Path) -> None:
    """The scripts that run inside the three environments need Django, which is not here."""
    compile(path.read_text(), str(path), "exec")
