"""Settings: built from TASKFAN_* variables and overrides, validated on creation."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest

from taskfan.errors import ConfigError
from taskfan.settings import DEFAULT_RESULT_TTL, ENV, Settings


def test_defaults_are_valid_and_frozen() -> None:
    settings = Settings()
    assert settings.redis_url is None
    assert settings.queues == ("default",) and settings.queue == "default"
    assert settings.result_ttl == DEFAULT_RESULT_TTL
    assert settings.processes >= 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.codec = "json"  # type: ignore[misc]


def test_from_env_parses_every_kind_of_variable() -> None:
    env = {
        "TASKFAN_REDIS_URL": "redis://h:1/2",
        "TASKFAN_QUEUE": "high, low ,,",
        "TASKFAN_PROCESSES": "3",
        "TASKFAN_CHUNKSIZE": "10",
        "TASKFAN_BATCH_SIZE": "100",
        "TASKFAN_RESULT_TTL": "0",
        "TASKFAN_CODEC": "json",
        "TASKFAN_VISIBILITY_TIMEOUT": "30.5",
        "TASKFAN_HEARTBEAT_INTERVAL": "2",
        "TASKFAN_MAX_DELIVERIES": "9",
        "TASKFAN_START_METHOD": "spawn",
        "TASKFAN_BURST": "yes",
        "TASKFAN_PATH": os.pathsep.join(["src", "lib"]),
        "TASKFAN_NODE_NAME": "n1",
        "UNRELATED": "ignored",
    }
    assert Settings.from_env(env) == Settings(
        redis_url="redis://h:1/2",
        queues=("high", "low"),
        processes=3,
        chunksize=10,
        batch_size=100,
        result_ttl=0,
        codec="json",
        visibility_timeout=30.5,
        heartbeat_interval=2.0,
        max_deliveries=9,
        start_method="spawn",
        burst=True,
        paths=("src", "lib"),
        node_name="n1",
    )


def test_every_variable_names_a_field() -> None:
    names = {f.name for f in dataclasses.fields(Settings)}
    assert {name for name, _ in ENV.values()} <= names
    assert all(var.startswith("TASKFAN_") for var in ENV)


def test_empty_variables_count_as_unset() -> None:
    assert Settings.from_env({"TASKFAN_PROCESSES": "", "TASKFAN_CODEC": ""}) == Settings.from_env(
        {}
    )


def test_overrides_win_unless_none() -> None:
    env = {"TASKFAN_PROCESSES": "3", "TASKFAN_CODEC": "json"}
    settings = Settings.from_env(env, processes=5, codec=None)
    assert (settings.processes, settings.codec) == (5, "json")
    assert settings.replace(processes=7).processes == 7


@pytest.mark.parametrize(
    ("var", "text"),
    [
        ("TASKFAN_PROCESSES", "many"),
        ("TASKFAN_BURST", "maybe"),
        ("TASKFAN_VISIBILITY_TIMEOUT", "1m"),
    ],
)
def test_unparsable_variables_are_named(var: str, text: str) -> None:
    with pytest.raises(ConfigError, match=f"environment variable {var}={text!r}"):
        Settings.from_env({var: text})


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"queues": ()}, "at least one queue"),
        ({"queues": ("a:b",)}, "invalid queue name 'a:b'"),
        ({"processes": 0}, "processes must be a whole number from 1 to 1024, got 0"),
        ({"processes": 10**6}, "processes must be a whole number from 1 to 1024"),
        ({"chunksize": -1}, "chunksize must be"),
        ({"batch_size": 1.5}, "batch_size must be"),
        ({"max_deliveries": 0}, "max_deliveries must be"),
        ({"max_tasks_per_child": 0}, "max_tasks_per_child must be"),
        ({"max_tasks_per_child": 10**12}, "max_tasks_per_child must be"),
        ({"result_ttl": -1}, "result_ttl must be a whole number from 0"),
        ({"result_ttl": 10**12}, "result_ttl must be a whole number from 0"),
        ({"codec": "yaml"}, "codec must be one of pickle, json, got 'yaml'"),
        ({"block_seconds": 0}, "block_seconds must be a number of seconds more than 0"),
        # No number that reaches a wait is unbounded: NaN, inf, huge (taskfan.bounds).
        ({"block_seconds": 1e10}, "block_seconds must be .* at most 3600, got 10000000000.0"),
        ({"grace_period": float("nan")}, "grace_period must be .* got nan"),
        ({"grace_period": 1e10}, "grace_period must be"),
        ({"visibility_timeout": float("inf")}, "visibility_timeout must be .* got inf"),
        ({"heartbeat_interval": float("nan")}, "heartbeat_interval must be .* got nan"),
        ({"max_deliveries": True}, "max_deliveries must be .* got True"),
        ({"visibility_timeout": 8, "heartbeat_interval": 5}, "at most half the visibility"),
        ({"start_method": "teleport"}, "start_method 'teleport' is not available"),
    ],
)
def test_invalid_values_are_refused_by_name(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Settings(**changes)


def test_invalid_environment_values_name_the_setting() -> None:
    with pytest.raises(ConfigError, match="processes must be a whole number"):
        Settings.from_env({"TASKFAN_PROCESSES": "0"})
    with pytest.raises(ConfigError, match="invalid queue name"):
        Settings.from_env({"TASKFAN_QUEUE": "bad name"})
