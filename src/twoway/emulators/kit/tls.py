"""A local test CA and a server certificate for 127.0.0.1/localhost, kept in a directory.

For clients that only speak https (simple-salesforce builds `https://` URLs). Reused across restarts,
so a client that loaded the CA file keeps trusting a restarted emulator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme

NAMES = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path


def ensure(directory: str | Path) -> TlsFiles:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(d / "ca.pem", d / "server.pem", d / "server.key")
    ca_key = d / "ca.key"
    if all(p.exists() for p in (files.ca_file, files.cert_file, files.key_file, ca_key)):
        return files
    ca = trustme.CA()
    server = ca.issue_cert(*NAMES)
    _write(ca_key, ca.private_key_pem.bytes())
    _write(files.key_file, server.private_key_pem.bytes())
    server.cert_chain_pems[0].write_to_path(str(files.cert_file))
    ca.cert_pem.write_to_path(str(files.ca_file))
    return files


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)
