"""The JSON round trip every argument list and return value goes through.

Django's ImmediateBackend normalises values with `normalize_json`; we additionally encode and
decode them for real, because that is what a task delivered over HTTP or read back from the
database sees (`{1: "a"}` arrives as `{"1": "a"}`, tuples as lists). NaN and infinities are
refused: PostgreSQL's jsonb cannot store them.
"""

import json
from typing import Any

from django.utils.json import normalize_json


def json_round_trip(value: Any) -> Any:
    """`value` as it comes back from JSON storage; TypeError/ValueError if it cannot be stored."""
    return json.loads(json.dumps(normalize_json(value), allow_nan=False))
