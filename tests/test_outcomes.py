"""Retry entries: partial result entries and how readers overlay them."""

from __future__ import annotations

import pytest

from taskfan.codec import JSON, PICKLE
from taskfan.errors import ProtocolError
from taskfan.options import CallMode
from taskfan.outcomes import ResultEntry, encode_result, iter_outcomes, merged_outcomes
from taskfan.protocol import BatchEntry


def blob(values: list[object], errors: list[list[object]], attempts: list[list[int]]) -> bytes:
    return JSON.dumps([values, errors, attempts])


def test_a_retry_entry_names_its_items_by_offset() -> None:
    data = encode_result(100, 2, 0, [blob([5, 7], [], [])], offsets=[1, 3])
    entry = ResultEntry.parse(data, "test")
    assert entry.offsets == (1, 3)
    assert [(o.index, o.value) for o in iter_outcomes(entry, JSON, "test")] == [(101, 5), (103, 7)]
    with pytest.raises(ValueError, match="offsets"):
        encode_result(0, 2, 0, [], offsets=[1])
    with pytest.raises(ProtocolError, match="truncated"):
        ResultEntry.parse(data[:30], "test")


def test_retries_overlay_the_batch_and_add_up_attempts() -> None:
    first = encode_result(
        10,
        4,
        2,
        [
            blob(
                [1, None, 3, None],
                [[1, "E", "m", "", None, "in1"], [3, "E", "m", "", None, "in3"]],
                [],
            )
        ],
    )
    retry = encode_result(
        10, 2, 1, [blob([20, None], [[1, "E", "again", "", None, "in3"]], [])], [1, 3]
    )
    outcomes = merged_outcomes(
        [ResultEntry.parse(first, "a"), ResultEntry.parse(retry, "b")], JSON, "t"
    )
    assert [(o.index, o.ok, o.value, o.attempts) for o in outcomes] == [
        (10, True, 1, 1),
        (11, True, 20, 2),
        (12, True, 3, 1),
        (13, False, None, 2),
    ]
    assert outcomes[3].error is not None and outcomes[3].error.retry_input == ("in3",)


def test_a_retry_batch_entry_round_trips() -> None:
    entry = BatchEntry("j", 4, 40, 2, "m:f", "pickle", CallMode.ONE, 0, PICKLE.dumps([1, 2]),
                       round=2, offsets=(3, 9))  # fmt: skip
    assert entry.field == "4.2"
    raw = {
        k.encode(): v if isinstance(v, bytes) else str(v).encode()
        for k, v in entry.fields().items()
    }
    assert BatchEntry.parse(raw, "e") == entry
    raw[b"x"] = b"[3]"
    with pytest.raises(ProtocolError, match="1 offsets for 2 items"):
        BatchEntry.parse(raw, "e")
