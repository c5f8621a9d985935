"""TLS for the HTTP API: which certificate and key it serves, and a self-signed pair.

Loopback may go without TLS.  Any other address needs a pair: the one given with
--http-cert/--http-key, or a self-signed one made once in the server dir (kept, and made
again only when it no longer covers the address or is about to expire), unless
--http-insecure asks for plain HTTP.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import socket
import ssl
from pathlib import Path

from hpcqueue.access import ensure_private_dir, write_private_file
from hpcqueue.exceptions import HpcqueueError, UsageError
from hpcqueue.server.config import ServerConfig

log = logging.getLogger("hpcqueue.server")

CERT_FILE, KEY_FILE = "http-cert.pem", "http-key.pem"  # the self-signed pair, in the server dir
CERT_DAYS = 3650  # validity of the self-signed certificate
TLS_CHOICES = ("give both --http-cert and --http-key, or neither to use a self-signed pair "
               "made in the server dir, or --http-insecure to serve plain HTTP")
WILDCARDS = ("0.0.0.0", "::", "")  # --http-host values that mean every address


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    """The host name clients use for an address the API binds."""
    if host in WILDCARDS:
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host


def tls_files(cfg: ServerConfig) -> tuple[Path, Path] | None:
    """The (certificate, key) the API serves TLS with, or None for plain HTTP.

    Loopback may go without TLS; any other address needs a pair: the one given, or a
    self-signed one kept in the server dir, unless --http-insecure asks for plain HTTP."""
    cert, key = cfg.http_cert, cfg.http_key
    if (cert is None) != (key is None):
        given = "--http-cert" if cert is not None else "--http-key"
        raise UsageError(f"{given} alone cannot serve TLS: {TLS_CHOICES}")
    if cert is not None:
        return cert, key
    if is_loopback(cfg.http_host) or cfg.http_insecure:
        return None
    return cfg.server_dir / CERT_FILE, cfg.server_dir / KEY_FILE


def self_signed_names(host: str) -> list[str]:
    """The names and addresses a self-signed certificate for `host` vouches for."""
    names = [socket.gethostname(), "localhost", "127.0.0.1", "::1"]
    return list(dict.fromkeys(names if host in WILDCARDS else [host, *names]))


def _alt_name(name: str):
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def ensure_self_signed(cert_path: Path, key_path: Path, names: list[str]) -> None:
    """Make the self-signed pair once; again only if it does not cover `names` or expires
    within a month.  The key file is 0600."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    try:
        old = x509.load_pem_x509_certificate(cert_path.read_bytes())
        covered = old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        expires = getattr(old, "not_valid_after_utc", None) or \
            old.not_valid_after.replace(tzinfo=datetime.timezone.utc)  # cryptography < 42
        if key_path.exists() and all(_alt_name(n) in covered for n in names) and \
                expires - now > datetime.timedelta(days=30):
            return
    except (OSError, ValueError, x509.ExtensionNotFound):
        pass
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                            f"hpcqueue HTTP API on {socket.gethostname()}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName([_alt_name(n) for n in names]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private_file(key_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    write_private_file(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    log.info("made a self-signed certificate for the HTTP API: %s (clients trust it with "
             "e.g. `curl --cacert %s`)", cert_path, cert_path)


def tls_context(cfg: ServerConfig) -> ssl.SSLContext | None:
    """The TLS context of the API (None: plain HTTP); raises HpcqueueError saying what to do."""
    files = tls_files(cfg)
    if files is None:
        return None
    cert, key = files
    if cfg.http_cert is None:
        ensure_private_dir(cfg.server_dir)
        ensure_self_signed(cert, key, self_signed_names(cfg.http_host))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        reason = getattr(e, "strerror", None) or getattr(e, "reason", None) or e
        raise HpcqueueError(f"cannot serve TLS with certificate {cert} and key {key} "
                            f"({reason}): {TLS_CHOICES}") from None
    return context
