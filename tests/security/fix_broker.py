"""A private Mosquitto started from ``deploy/mosquitto/mosquitto-secure.conf`` and ``acl``
(paths and port rewritten), with a CA, broker and client certificates made in the test with
`cryptography`, and a password file made with ``mosquitto_passwd``."""

from __future__ import annotations

import datetime
import getpass
import ipaddress
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.fix_services import IN_CI

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
USERS = {"gs-1": "pw-gs-1-Secret", "coord-1": "pw-coord-Secret", "inspector": "pw-insp-Secret"}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Pki:
    ca: Path
    cert: dict[str, Path]
    key: dict[str, Path]


def make_pki(root: Path, label: str, names: list[str]) -> Pki:
    """A CA and, for each name, a certificate it signs (the broker's also valid for
    localhost and 127.0.0.1)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{label} CA"))
        .issuer_name(_name(f"{label} CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(root / f"{label}-ca.crt", {}, {})
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if name == "broker":
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        pki.cert[name] = root / f"{label}-{name}.crt"
        pki.key[name] = root / f"{label}-{name}.key"
        pki.cert[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pki.key[name].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return pki


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class SecureBroker:
    port: int
    pki: Pki
    wrong: Pki
    log: Path

    def url(
        self,
        user: str,
        password: str | None = None,
        *,
        pki: Pki | None = None,
        cert_of: str | None = None,
    ) -> str:
        p = pki or self.pki
        who = cert_of or user
        pw = USERS.get(user, "") if password is None else password
        return (
            f"mqtts://{user}:{pw}@localhost:{self.port}"
            f"?ca={p.ca}&cert={self.pki.cert[who]}&key={self.pki.key[who]}"
        )


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[SecureBroker]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists() or shutil.which("mosquitto_passwd") is None:
        msg = "mosquitto and mosquitto_passwd are needed for the broker ACL tests"
        if IN_CI:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    pki = make_pki(tmp_path, "mesh", ["broker", *USERS])
    wrong = make_pki(tmp_path, "other", ["broker"])
    passwd = tmp_path / "passwd"
    passwd.touch()
    for user, pw in USERS.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, pw], check=True)
    port = _free_port()
    conf = (DEPLOY / "mosquitto-secure.conf").read_text()
    log = tmp_path / "mosquitto.log"
    replacements = {
        "/mosquitto/config/passwd": str(passwd),
        "/mosquitto/config/acl": str(DEPLOY / "acl"),
        "/mosquitto/certs/ca.crt": str(pki.ca),
        "/mosquitto/certs/broker.crt": str(pki.cert["broker"]),
        "/mosquitto/certs/broker.key": str(pki.key["broker"]),
        "listener 8883 0.0.0.0": f"listener {port} 127.0.0.1",
        "persistence true": "persistence false",
        "log_dest stdout": f"log_dest file {log}",
    }
    for old, new in replacements.items():
        assert old in conf, f"{old!r} is no longer in mosquitto-secure.conf"
        conf = conf.replace(old, new)
    # as root, mosquitto drops to user "mosquitto", who cannot read the test's directory
    conf += f"\nuser {getpass.getuser()}\n"
    (tmp_path / "mosquitto.conf").write_text(conf)
    proc = subprocess.Popen(
        [exe, "-c", str(tmp_path / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    logged = log.read_text() if log.exists() else ""
                    raise RuntimeError(f"mosquitto did not start: {err} {logged}") from None
                time.sleep(0.05)
        yield SecureBroker(port, pki, wrong, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
