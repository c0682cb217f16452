"""TLS between machines: a private CA and the control host's server certificate.

``hydra up --tls`` and ``hydra tls init`` (compose runs it once, before Redis) call
:func:`ensure_tls`, which keeps four files under ``$HYDRA_DATA_DIR/tls/``:

- ``ca.key`` / ``ca.pem``: the control plane's own certificate authority (ECDSA P-256, 10 years).
  Volunteers get ``ca.pem`` with their credentials (:func:`ca_pem`) and trust only it
  (``HYDRA_REDIS_CA``), so a server without a certificate from this CA is refused.
- ``server.key`` / ``server.pem``: the certificate Redis (``rediss://``) and the webapp (HTTPS)
  present, signed by the CA (ECDSA P-256, 2 years), valid for 127.0.0.1, ::1, localhost, this
  machine's host name and every name or address in ``HYDRA_PUBLIC_HOST``.

Keys are mode 0600, certificates 0644; every file is written whole or not at all
(:mod:`hydra_tasks.secrets_io`). It is idempotent: the CA is kept as long as its key and
certificate match and it is valid for another 30 days; the server certificate is re-issued when its
names changed, it was not issued by the CA, or it expires within 30 days. Concurrent callers are
serialised by a lock file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..errors import TlsError
from ..secrets_io import write_private
from ..settings import Settings

TLS_DIR_NAME = "tls"
CA_VALID_DAYS = 3650
SERVER_VALID_DAYS = 730
RENEW_BEFORE_DAYS = 30
#: Certificates are valid from this long before they are issued, so a volunteer whose clock is behind
#: (by minutes, or a day) can still verify a certificate issued just now.
BACKDATE = dt.timedelta(days=1)
PUBLIC_MODE = 0o644
_LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class TlsFiles:
    """Where the CA certificate, the server certificate and the server key are."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def in_dir(cls, directory: Path) -> "TlsFiles":
        return cls(ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server.key")

    def exist(self) -> bool:
        return self.ca.is_file() and self.cert.is_file() and self.key.is_file()


def tls_dir(settings: Settings) -> Path:
    return settings.data_dir / TLS_DIR_NAME


def tls_files(settings: Settings) -> TlsFiles:
    """The paths of this data dir's TLS material (which may not exist yet; see :func:`ensure_tls`)."""
    return TlsFiles.in_dir(tls_dir(settings))


def server_names(settings: Settings) -> list[str]:
    """Every name and address the server certificate is valid for, sorted, without duplicates."""
    names = {*_LOOPBACK_NAMES, socket.gethostname().strip().lower()}
    names.update(h.strip().lower() for h in settings.public_host.split(",") if h.strip())
    return sorted(_normal(n) for n in names if n)


def ca_pem(settings: Settings) -> str | None:
    """The CA certificate (PEM text) volunteers need to verify this control host, or None if
    :func:`ensure_tls` has not created one in this data dir."""
    try:
        text = tls_files(settings).ca.read_text()
    except FileNotFoundError:
        return None
    return text if "BEGIN CERTIFICATE" in text else None


def ensure_tls(settings: Settings, *, now: dt.datetime | None = None) -> TlsFiles:
    """Create (or renew) the CA and the server certificate in ``$HYDRA_DATA_DIR/tls``; return their paths."""
    directory = tls_dir(settings)
    files = TlsFiles.in_dir(directory)
    now = now or dt.datetime.now(dt.timezone.utc)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with _locked(directory / ".lock"):
            ca_key, ca_cert, ca_created = _ensure_ca(directory, now)
            _ensure_server(files, ca_key, ca_cert, server_names(settings), now, force=ca_created)
    except OSError as exc:
        raise TlsError(f"Cannot write the TLS certificates in {directory} ({exc.strerror or exc}); nothing was "
                       f"left half-written. Free some disk space or fix the directory's permissions.") from None
    return files


# --- internals -------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _normal(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.rstrip(".")


def _ensure_ca(directory: Path, now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, bool]:
    """The CA's key and certificate; a new pair if they are missing, do not match or expire soon."""
    key_path, cert_path = directory / "ca.key", directory / "ca.pem"
    existing = _load_pair(key_path, cert_path)
    if existing is not None:
        key, cert = existing
        if cert.not_valid_after_utc - now > dt.timedelta(days=RENEW_BEFORE_DAYS):
            return key, cert, False
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hydra"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"Hydra control-plane CA ({socket.gethostname()})")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE).not_valid_after(now - BACKDATE + dt.timedelta(days=CA_VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, hashes.SHA256()))
    _write_key(key_path, key)  # the key first: a certificate without its key is never left behind alone
    _write_cert(cert_path, cert)
    return key, cert, True


def _ensure_server(files: TlsFiles, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate,
                   names: list[str], now: dt.datetime, *, force: bool) -> None:
    existing = None if force else _load_pair(files.key, files.cert)
    if existing is not None and _server_cert_is_current(existing[1], ca_cert, names, now):
        return
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hydra"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, socket.gethostname()[:64] or "hydra")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(min(now - BACKDATE + dt.timedelta(days=SERVER_VALID_DAYS), ca_cert.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_key(files.key, key)
    _write_cert(files.cert, cert)


def _server_cert_is_current(cert: x509.Certificate, ca_cert: x509.Certificate, names: list[str],
                            now: dt.datetime) -> bool:
    try:
        cert.verify_directly_issued_by(ca_cert)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    have = sorted({str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
                  | set(sans.get_values_for_type(x509.DNSName)))
    return have == names and cert.not_valid_after_utc - now > dt.timedelta(days=RENEW_BEFORE_DAYS)


def _load_pair(key_path: Path, cert_path: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
    """A key and its certificate, or None if either is missing, unreadable, or they do not match."""
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (FileNotFoundError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or cert.public_key() != key.public_key():
        return None
    return key, cert


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()).decode())


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    write_private(path, cert.public_bytes(serialization.Encoding.PEM).decode())
    os.chmod(path, PUBLIC_MODE)  # a certificate is public; its key stays 0600
