"""Several hosts on one machine: network namespaces in a star, joined by veth pairs.

The hub namespace (the Redis host) has a veth pair to each leaf namespace (the
other hosts) and one to the root namespace (the test itself, which watches
Redis). Each pair is a /30 of its own inside one link-local 169.254.T.0/24
that no route here mentions (never 169.254.169.x, the metadata range), so no
traffic leaves the pairs. Setting the hub's end of a leaf's pair down cuts that
host off. Names start with ``taskfan-scale-`` and ``tfs``, apart from the chaos
suite's ``taskfan-chaos-`` and ``tfc``.
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

from tests.chaos.netns import _ip


@dataclass(frozen=True)
class Host:
    """A leaf namespace and its link to the hub."""

    namespace: str
    hub_namespace: str
    hub_veth: str  #: the hub's end of the pair
    address: str  #: this host's end
    hub_address: str  #: the hub's address on this link: where this host reaches Redis

    @property
    def exec(self) -> tuple[str, ...]:
        """The command prefix that runs a program on this host."""
        return ("ip", "netns", "exec", self.namespace)

    def cut(self) -> None:
        _ip("-n", self.hub_namespace, "link", "set", self.hub_veth, "down")


@dataclass(frozen=True)
class Star:
    hub: Host  #: the hub itself; ``hub_address`` is its address on the root's link
    leaves: list[Host]


def _third_octet() -> int:
    routes = _ip("-4", "route", "show", "table", "all")
    rng = random.Random(os.getpid() + 7)
    for _ in range(100):
        third = rng.choice([n for n in range(1, 255) if n != 169])
        if f"169.254.{third}." not in routes:
            return third
    raise AssertionError("no unused 169.254.X.0/24 for the test's hosts")


def _pair(tag: str, a_ns: str | None, b_ns: str, a_ip: str, b_ip: str) -> None:
    """A veth pair ``tag``a (in ``a_ns``, or the root namespace) - ``tag``b (in ``b_ns``)."""
    a, b = f"{tag}a", f"{tag}b"
    try:
        _ip("link", "add", a, "type", "veth", "peer", "name", b, "netns", b_ns)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"several hosts: cannot create a veth pair here: {exc.stderr.strip()}")
    if a_ns is not None:
        _ip("link", "set", a, "netns", a_ns)
    prefix_a = ("-n", a_ns) if a_ns else ()
    _ip(*prefix_a, "addr", "add", f"{a_ip}/30", "dev", a)
    _ip(*prefix_a, "link", "set", a, "up")
    _ip("-n", b_ns, "addr", "add", f"{b_ip}/30", "dev", b)
    _ip("-n", b_ns, "link", "set", b, "up")


@contextlib.contextmanager
def star(leaves: int) -> Iterator[Star]:
    """A hub and ``leaves`` hosts, removed afterwards; skips when not permitted here."""
    if shutil.which("ip") is None:
        pytest.skip("several hosts: the `ip` command (iproute2) is not installed")
    pid = os.getpid()
    names = [f"taskfan-scale-{pid}-{i}" for i in range(leaves + 1)]  # names[0]: the hub
    made: list[str] = []
    try:
        for name in names:
            try:
                _ip("netns", "add", name)
            except subprocess.CalledProcessError as exc:
                pytest.skip(f"several hosts: `ip netns add` is not permitted here: {exc.stderr}")
            made.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        net = f"169.254.{_third_octet()}"
        # Link 0: the root namespace (the test) to the hub; link i: the hub to leaf i.
        _pair(f"tfs{pid}0", None, names[0], f"{net}.2", f"{net}.1")
        hub = Host(names[0], names[0], f"tfs{pid}0b", f"{net}.1", f"{net}.1")
        hosts = []
        for i in range(1, leaves + 1):
            hub_ip, leaf_ip = f"{net}.{4 * i + 1}", f"{net}.{4 * i + 2}"
            _pair(f"tfs{pid}{i}", names[0], names[i], hub_ip, leaf_ip)
            hosts.append(Host(names[i], names[0], f"tfs{pid}{i}a", leaf_ip, hub_ip))
        yield Star(hub, hosts)
    finally:
        # Deleting a namespace deletes the veth ends in it, and so their pairs.
        subprocess.run(["ip", "link", "del", f"tfs{pid}0a"], capture_output=True, timeout=10)
        for name in made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
