"""Classroom mode (``make classroom``): the Studio over HTTPS on the local network, so students'
phones can join and record (browsers give the microphone and camera only to ``https`` pages or
localhost).

- ``lan_address()``: this machine's address on the local network (asks the OS which interface
  routes outward; a UDP "connect" sends no packet).
- ``ensure_certificate(folder, hosts)``: a self-signed certificate for those addresses, made here
  with ``cryptography`` on first use and kept in ``folder`` (made again when the address changes or
  it nears expiry). Never downloaded; the private key never leaves this machine.
- ``qr_svg(url)`` / ``qr_text(url)``: a QR code of the address (``segno``) for the page and the terminal.
- ``sidebar()``: shows the address, its QR code and the one-time certificate warning in the app, when
  the server was started in classroom mode (``FINEPRUNE_CLASSROOM_URL``).
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from pathlib import Path

URL_ENV = "FINEPRUNE_CLASSROOM_URL"
CERT_DAYS = 30
CERT_WARNING = (
    "The first time a device opens the address, its browser warns that the connection is not private "
    "(\"NET::ERR_CERT_AUTHORITY_INVALID\", \"Warning: Potential Security Risk\", \"This Connection Is Not "
    "Private\"). That is expected: the certificate was made on the teacher's laptop a moment ago, not bought "
    "from an authority. The connection is still encrypted. Choose **Advanced → Proceed** (Chrome, Edge), "
    "**Advanced → Accept the Risk and Continue** (Firefox) or **Show Details → visit this website** "
    "(Safari) once; after that the browser asks for the microphone and camera as usual."
)


def lan_address() -> str:
    """This machine's LAN address (falls back to 127.0.0.1 without a network)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the outgoing interface
            address = s.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    return address


def _hosts_of(cert) -> set[str]:
    from cryptography import x509

    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in names.get_values_for_type(x509.IPAddress)} | set(names.get_values_for_type(x509.DNSName))


def ensure_certificate(folder: Path, hosts: list[str]) -> tuple[Path, Path, bool]:
    """``(cert.pem, key.pem, made_now)`` for ``hosts`` (IP addresses or names), made on first use."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    now = dt.datetime.now(dt.timezone.utc)
    if cert_path.exists() and key_path.exists():
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            fresh = cert.not_valid_after_utc - now > dt.timedelta(days=1)
            if fresh and set(hosts) <= _hosts_of(cert):
                return cert_path, key_path, False
        except ValueError:
            pass  # unreadable: make a new one
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fine-Pruning Studio (classroom)")])
    alt = []
    for host in dict.fromkeys(hosts):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the key: readable by its owner only
    with os.fdopen(fd, "wb") as out:
        out.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path, True


def qr_svg(url: str, scale: int = 5) -> str:
    import segno

    return segno.make(url, error="m").svg_inline(scale=scale, dark="#111111", light="#FFFFFF")


def qr_text(url: str) -> str:
    """The QR code as text for a terminal (two rows per line; dark modules drawn light on dark)."""
    import io

    import segno

    out = io.StringIO()
    segno.make(url, error="m").terminal(out=out, compact=True)
    return out.getvalue()


def classroom_url() -> str | None:
    return os.environ.get(URL_ENV) or None


def sidebar() -> None:
    """The address students open, as text and QR code, with the certificate note (classroom mode only)."""
    url = classroom_url()
    if not url:
        return
    import streamlit as st

    with st.sidebar:
        st.markdown("**Join from your phone**")
        st.image(qr_svg(url), width=180)
        st.code(url, language=None)
        with st.expander("“Not private” warning?"):
            st.markdown(CERT_WARNING)
