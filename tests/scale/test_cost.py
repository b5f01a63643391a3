"""What a job costs Redis (benchmarks/redis_cost.py, quoted in docs/scaling.md)
stays what the docs say: about 14 commands per batch, whatever the batch size."""

from __future__ import annotations

from benchmarks.redis_cost import measure, table


def test_a_job_costs_redis_a_few_commands_per_batch() -> None:
    cost = measure(2000, 100)
    assert (cost.items, cost.batch_size, cost.batches) == (2000, 100, 20)
    per_batch = cost.commands / cost.batches
    assert 10 <= per_batch <= 20, cost.used.calls
    # Once per batch, whatever else changes: record.lua (and seal.lua once), the ack.
    for command in ("xack", "xdel", "hsetnx"):
        assert cost.used.calls[command] == cost.batches, (command, cost.used.calls)
    assert cost.used.calls["evalsha"] == cost.batches + 1, cost.used.calls
    assert cost.used.bytes_in / cost.items < 60, "bytes per item grew"
    assert "| 2,000 | 100 | 20 |" in table([cost])
