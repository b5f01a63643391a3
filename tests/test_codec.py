"""Codecs: round trips, exceptions through pickle, clear errors for what cannot travel."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskfan.codec import JSON, PICKLE, Codec, get_codec
from taskfan.errors import ConfigError, EncodeError, TaskFailed

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@given(json_values)
def test_json_round_trips_json_values(value: Any) -> None:
    assert JSON.loads(JSON.dumps(value)) == value


@given(json_values)
def test_pickle_round_trips_the_same_values(value: Any) -> None:
    assert PICKLE.loads(PICKLE.dumps(value)) == value


def test_json_keeps_text_readable_and_turns_tuples_into_lists() -> None:
    data = JSON.dumps({"name": "café", "pair": (1, 2)})
    assert data == '{"name":"café","pair":[1,2]}'.encode()
    assert JSON.loads(data) == {"name": "café", "pair": [1, 2]}


def test_pickle_keeps_python_types() -> None:
    value = {"pair": (1, 2), "set": {3}, "bytes": b"\x00", "big": 2**100}
    assert PICKLE.loads(PICKLE.dumps(value)) == value


def test_pickle_carries_exceptions_with_their_type_and_args() -> None:
    error = PICKLE.loads(PICKLE.dumps(KeyError("missing", 3)))
    assert type(error) is KeyError
    assert error.args == ("missing", 3)
    assert PICKLE.carries_exceptions and not JSON.carries_exceptions


def test_task_failed_survives_pickle_without_its_cause() -> None:
    failed = TaskFailed("job1", 4, "ValueError", "bad 4", "Traceback ...", ValueError("bad 4"))
    back = PICKLE.loads(PICKLE.dumps(failed))
    assert (back.job_id, back.index, back.type_name, back.message) == (
        "job1",
        4,
        "ValueError",
        "bad 4",
    )
    assert back.traceback == "Traceback ..."
    assert back.exception is None
    assert "item 4 of job job1 failed: ValueError: bad 4" in str(back)


@pytest.mark.parametrize(
    ("codec", "value", "words"),
    [
        (PICKLE, threading.Lock(), "cannot pickle lock"),
        (PICKLE, lambda: 1, "cannot pickle function"),
        (JSON, {1, 2}, "cannot encode set as JSON"),
        (JSON, object(), "cannot encode object as JSON"),
        (JSON, b"bytes", "cannot encode bytes as JSON"),
        (JSON, {"nested": [object()]}, "cannot encode dict as JSON"),
    ],
)
def test_values_that_cannot_travel_raise_encode_error(codec: Codec, value: Any, words: str) -> None:
    with pytest.raises(EncodeError, match=words):
        codec.dumps(value)


def test_json_refuses_circular_values() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(EncodeError):
        JSON.dumps(loop)


def test_get_codec_by_name_or_bytes() -> None:
    assert get_codec("json") is JSON
    assert get_codec(b"pickle") is PICKLE
    with pytest.raises(ConfigError, match="unknown codec 'yaml': choose one of pickle, json"):
        get_codec("yaml")
