"""Per-call cost of Google API calls and push authentication: cached vs rebuilt every time.

    uv run python bench/google_calls.py [--calls 200] [--project PATH]

Inside a rendered service, with the real client libraries and local stand-ins for Google:

* Cloud Tasks CreateTask over real gRPC to the in-process fake: the shared client of
  `django_tasks_google.gcp` vs a new client and channel per call.
* OIDC push verification of a real RS256 token from the local issuer: `django_tasks_google.auth`
  (certificates cached per Cache-Control) vs `google.oauth2.id_token.verify_token`, which
  downloads the certificates on every call.

Prints median and mean latency per call and the ratios; timing never fails anything.
"""

import argparse

from harness import add_project_argument, print_table, rendered_project, run_inside

ROWS = [
    ("Cloud Tasks CreateTask", "create_task_fresh", "new client + channel per call (baseline)"),
    ("Cloud Tasks CreateTask", "create_task_cached", "gcp.cloud_tasks_client() (ours)"),
    ("OIDC push verification", "verify_uncached", "id_token.verify_token (baseline)"),
    ("OIDC push verification", "verify_cached", "auth.verify_id_token (ours)"),
]
BASELINE = {"create_task_cached": "create_task_fresh", "verify_cached": "verify_uncached"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=200, help="timed calls per design (default: 200)")
    add_project_argument(parser)
    args = parser.parse_args()

    with rendered_project(args.project) as project:
        results = run_inside(project, "google_calls.py", ["--calls", str(args.calls)])
    print(f"\n{args.calls} timed calls per design (after 5 warm-up calls)\n")
    rows = []
    for operation, name, label in ROWS:
        result = results[name]
        baseline = results[BASELINE.get(name, name)]
        downloads = result.get("cert_downloads")
        rows.append(
            [
                operation,
                label,
                f"{result['median_ms']:.2f}",
                f"{result['mean_ms']:.2f}",
                "" if downloads is None else str(downloads),
                f"{baseline['median_ms'] / result['median_ms']:.1f}x",
            ]
        )
    print_table(["operation", "design", "median ms", "mean ms", "cert downloads", "speed-up"], rows)


if __name__ == "__main__":
    main()
