"""Local worker throughput: the pool worker vs a fresh interpreter per task.

    uv run python bench/local_worker.py [--tasks 30] [--concurrency 2] [--project PATH]

Drains the same number of no-op tasks (the service's sample `send_notification`) twice, with the
same concurrency: once with `manage.py run_tasks` (Django set up once, then a pool of forked
processes that run many attempts each) and once with one `manage.py execute_task <id>` process
per task, which is what a spawn-per-task worker costs (a new interpreter and `django.setup()` for
every attempt). Prints the throughput of both and their ratio; timing never fails anything.
"""

import argparse

from harness import add_project_argument, print_table, rendered_project, run_inside


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=30, help="tasks per design (default: 30)")
    parser.add_argument("--concurrency", type=int, default=2, help="attempts at once (default: 2)")
    parser.add_argument("--database-url", help="default: a SQLite file in the project")
    add_project_argument(parser)
    args = parser.parse_args()
    if args.tasks < 2 or args.concurrency < 1:
        parser.error("--tasks must be at least 2 and --concurrency at least 1")

    with rendered_project(args.project) as project:
        elapsed = run_inside(
            project,
            "local_worker.py",
            ["--tasks", str(args.tasks), "--concurrency", str(args.concurrency)],
            database_url=args.database_url,
        )
    rates = {name: args.tasks / times["last"] for name, times in elapsed.items()}
    # After the first task: throughput once the start-up (interpreter, Django, the pool) is paid.
    steady = {name: (args.tasks - 1) / (times["last"] - times["first"]) for name, times in elapsed.items()}
    print(f"\n{args.tasks} no-op tasks, at most {args.concurrency} at once\n")
    print_table(
        ["design", "first done s", "all done s", "tasks/s", "vs spawn", "after first: tasks/s", "vs spawn"],
        [
            [
                label,
                f"{elapsed[name]['first']:.2f}",
                f"{elapsed[name]['last']:.2f}",
                f"{rates[name]:.1f}",
                f"{rates[name] / rates['spawn']:.1f}x",
                f"{steady[name]:.1f}",
                f"{steady[name] / steady['spawn']:.1f}x",
            ]
            for name, label in [
                ("spawn", "execute_task process per task (baseline)"),
                ("ours", "run_tasks pool worker"),
            ]
        ],
    )


if __name__ == "__main__":
    main()
