"""The "Google behaves badly" table: one row per scenario, printed at the end of the session.

Scenarios add rows with ``record()``; the fakes' pytest plugin prints them from
``pytest_terminal_summary``, so a run shows deliveries, body runs and final states side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

ROWS: list[ScenarioRow] = []


@dataclass(frozen=True)
class ScenarioRow:
    scenario: str
    deliveries: int  # pushes, scheduler firings and container attempts the emulator made
    body_runs: int  # times the task's body started (counted by its own side effect)
    final_states: str  # e.g. "SUCCESSFUL" or "FAILED,SUCCESSFUL"
    stuck: int  # executions not terminal once recovery ran
    beyond_limit: int  # body runs beyond the attempts allowed
    verdict: str  # "ok", or the invariant that failed


def record(row: ScenarioRow) -> None:
    ROWS.append(row)


def table() -> list[str]:
    headers = ("scenario", "deliveries", "body runs", "final states", "stuck", "beyond limit", "verdict")
    cells = [
        headers,
        *[
            (
                r.scenario,
                str(r.deliveries),
                str(r.body_runs),
                r.final_states,
                str(r.stuck),
                str(r.beyond_limit),
                r.verdict,
            )
            for r in ROWS
        ],
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in cells]
    return [lines[0], "  ".join("-" * w for w in widths), *lines[1:]]
