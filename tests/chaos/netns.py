"""A network namespace of the test's own, joined to ours by a veth pair.

Only addresses on the two ends of that pair are used: a link-local /30
(169.254.X.Y, never the 169.254.169.0/24 of cloud metadata services) picked
per test process and checked to be unused, so traffic never leaves the pair.
Setting the host end down cuts whatever runs inside the namespace off.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Link:
    namespace: str
    host_veth: str
    host_ip: str  #: our end, in the root namespace
    ns_ip: str  #: the namespace's end

    @property
    def exec(self) -> tuple[str, ...]:
        """The command prefix that runs a program inside the namespace."""
        return ("ip", "netns", "exec", self.namespace)

    def down(self) -> None:
        _ip("link", "set", self.host_veth, "down")

    def up(self) -> None:
        _ip("link", "set", self.host_veth, "up")


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=True)
    return done.stdout


def _unused_block() -> str:
    """The first three octets and the base of a /30 no route here mentions."""
    routes = _ip("-4", "route", "show", "table", "all")
    rng = random.Random(os.getpid())
    for _ in range(100):
        third = rng.choice([n for n in range(1, 255) if n != 169])
        if f"169.254.{third}." not in routes:
            return f"169.254.{third}.{rng.randrange(0, 256, 4)}"
    raise AssertionError("no unused 169.254.X.0/24 for the test's veth pair")


@contextlib.contextmanager
def linked_namespace() -> Iterator[Link]:
    """A namespace and veth pair, removed afterwards; skips when not permitted here."""
    if shutil.which("ip") is None:
        pytest.skip("network cut: the `ip` command (iproute2) is not installed")
    tag = f"tfc{os.getpid()}"
    namespace, host_veth, ns_veth = f"taskfan-chaos-{os.getpid()}", f"{tag}h", f"{tag}n"
    try:
        _ip("netns", "add", namespace)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"network cut: `ip netns add` is not permitted here: {exc.stderr.strip()}")
    try:
        base = _unused_block()
        prefix, last = base.rsplit(".", 1)
        host_ip, ns_ip = f"{prefix}.{int(last) + 1}", f"{prefix}.{int(last) + 2}"
        try:
            _ip("link", "add", host_veth, "type", "veth", "peer", "name", ns_veth,
                "netns", namespace)  # fmt: skip
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"network cut: cannot create a veth pair here: {exc.stderr.strip()}")
        _ip("addr", "add", f"{host_ip}/30", "dev", host_veth)
        _ip("link", "set", host_veth, "up")
        _ip("-n", namespace, "addr", "add", f"{ns_ip}/30", "dev", ns_veth)
        _ip("-n", namespace, "link", "set", ns_veth, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        yield Link(namespace, host_veth, host_ip, ns_ip)
    finally:
        # Deleting one end deletes the pair; then the namespace.
        subprocess.run(["ip", "link", "del", host_veth], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=10)
