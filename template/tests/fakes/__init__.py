"""In-process fakes of Google's APIs and of Google as an OIDC issuer, for the test suite."""
