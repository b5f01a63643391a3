"""A throwaway certificate authority, a server and a client certificate, for TLS tests.

Made with the ``openssl`` command line (EC P-256 keys: quick to generate), in a
folder of the test's own. The server certificate names 127.0.0.1 and localhost,
so clients can check the host name too.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  #: a CA that signed nothing here: verifying against it fails


def _openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=60)


def _key(folder: Path, name: str) -> None:
    _openssl(folder, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", f"{name}.key")  # fmt: skip


def _ca(folder: Path, name: str) -> None:
    _key(folder, name)
    _openssl(folder, "req", "-x509", "-new", "-key", f"{name}.key", "-days", "2",
             "-subj", f"/CN=taskfan test {name}", "-out", f"{name}.crt")  # fmt: skip


def _signed(folder: Path, name: str, extensions: str) -> None:
    _key(folder, name)
    _openssl(folder, "req", "-new", "-key", f"{name}.key", "-subj", f"/CN=taskfan {name}",
             "-out", f"{name}.csr")  # fmt: skip
    (folder / f"{name}.ext").write_text(extensions)
    _openssl(folder, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey",
             "ca.key", "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
             "-out", f"{name}.crt")  # fmt: skip


def make_certificates(folder: Path) -> Certificates:
    """Generate everything in ``folder``; skips the test when openssl is missing."""
    if shutil.which("openssl") is None:
        pytest.skip("TLS: the openssl command is not installed to make test certificates")
    _ca(folder, "ca")
    _ca(folder, "other")
    _signed(folder, "server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
            "extendedKeyUsage=serverAuth\n")  # fmt: skip
    _signed(folder, "client", "extendedKeyUsage=clientAuth\n")
    return Certificates(
        folder / "ca.crt", folder / "server.crt", folder / "server.key",
        folder / "client.crt", folder / "client.key", folder / "other.crt",
    )  # fmt: skip
