"""Shared fixtures of the project's test suite."""

# The in-process fakes of Google's APIs and the test OIDC issuer live in tests/fakes/.
pytest_plugins = ["tests.fakes.pytest_plugin"]
