"""Records read back from a store skip only the JSON-safety check; every other check still runs."""

import json

import pydantic
import pytest

from procmem.types import STORED, Procedure


def test_stored_records_read_back_equal_and_are_still_validated():
    p = Procedure(name="deploy", description="Deploy", steps=["git pull", "make deploy"], tags=["ops"],
                  metadata={"category": "ops", "limits": [1, 2]})
    raw = p.model_dump_json()
    assert Procedure.model_validate_json(raw, context=STORED) == p
    bad = json.loads(raw)
    bad["importance"] = 7
    with pytest.raises(pydantic.ValidationError, match="importance"):
        Procedure.model_validate_json(json.dumps(bad), context=STORED)


def test_new_records_must_hold_json_values():
    with pytest.raises(pydantic.ValidationError, match="metadata"):
        Procedure(name="x", metadata={"x": float("nan")})
    with pytest.raises(pydantic.ValidationError, match="not valid Unicode"):
        Procedure(name="x", description="\ud800")
