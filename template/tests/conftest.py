"""Shared fixtures of the project's test suite, and the order its modules run in."""

import pytest

# The in-process fakes of Google's APIs and the test OIDC issuer live in tests/fakes/.
pytest_plugins = ["tests.fakes.pytest_plugin"]


@pytest.hookimpl(trylast=True)  # after pytest-django's ordering, which each part keeps
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules marked `slow` first, the others after them.

    pytest-xdist hands whole modules to its processes in collection order (`--dist loadfile
    --no-loadscope-reorder`): a long module collected last would keep one process busy alone at the
    end while the others wait.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
