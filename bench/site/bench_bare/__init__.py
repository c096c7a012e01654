"""The floor of the push path: a view that does one INSERT, behind the same Django stack."""
