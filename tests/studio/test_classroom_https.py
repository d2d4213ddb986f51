"""Classroom mode for real: ``scripts/classroom.py`` makes a local certificate, prints the LAN address
with its QR code and the certificate note, and serves the Studio over HTTPS on a non-localhost address
of this machine (phones need https for the microphone and camera). The certificate is made here,
once, and kept; plain http is not served."""
from __future__ import annotations

import http.client
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import app_fixtures as fx
from studio.classroom import ensure_certificate, lan_address, qr_svg, qr_text

ROOT = Path(__file__).resolve().parents[2]


def test_certificate_is_made_once_for_the_addresses_and_remade_when_they_change(tmp_path):
    from cryptography import x509

    cert, key, made = ensure_certificate(tmp_path, ["192.0.2.7", "localhost"])
    assert made and cert.exists() and (key.stat().st_mode & 0o777) == 0o600
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["192.0.2.7"]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    first = cert.read_bytes()
    assert ensure_certificate(tmp_path, ["192.0.2.7"])[2] is False and cert.read_bytes() == first  # kept
    assert ensure_certificate(tmp_path, ["192.0.2.8"])[2] is True and cert.read_bytes() != first  # a new address
    cert.write_text("garbage")
    assert ensure_certificate(tmp_path, ["192.0.2.8"])[2] is True  # unreadable: made again


def test_qr_codes_hold_the_address():
    svg = qr_svg("https://192.0.2.7:8501")
    assert svg.startswith("<svg") and "http" not in svg.split(">", 1)[1]  # an inline picture, nothing fetched
    text = qr_text("https://192.0.2.7:8501")
    assert len(text.splitlines()) > 10 and set(text) <= set("█▀▄ \n")


@pytest.mark.slow
def test_make_classroom_serves_https_on_the_lan_address(tmp_path):
    address = lan_address()
    if address.startswith("127."):
        pytest.skip("this machine has no non-loopback address")
    fx.make_voice_bundle(tmp_path / "voice.pt")
    port = fx.free_port()
    env = {**os.environ, "FINEPRUNE_STUDIO_MODELS": f"voice={tmp_path / 'voice.pt'}",
           "FINEPRUNE_STUDIO_DEMO_ROOT": str(tmp_path / "none"), "PYTHONUNBUFFERED": "1"}
    log_path = tmp_path / "classroom.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "scripts/classroom.py", "--port", str(port), "--cert-dir", str(tmp_path / "cert")],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        context = ssl.create_default_context(cafile=str(tmp_path / "cert" / "cert.pem")) \
            if (tmp_path / "cert" / "cert.pem").exists() else None
        url = f"https://{address}:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "the classroom server did not start:\n" + log_path.read_text()[-3000:]
            if context is None and (tmp_path / "cert" / "cert.pem").exists():
                context = ssl.create_default_context(cafile=str(tmp_path / "cert" / "cert.pem"))
            try:
                if context is not None and urllib.request.urlopen(url + "/_stcore/health", timeout=3, context=context).read() == b"ok":
                    break
            except OSError:
                pass
            time.sleep(0.5)
        # the certificate made for this address verifies (host name included): a browser that accepted
        # it once connects without further warnings
        page = urllib.request.urlopen(url + "/", timeout=10, context=context).read().decode()
        assert "<html" in page.lower()
        with pytest.raises((OSError, http.client.HTTPException)):  # no plain http: a phone could not record there anyway
            urllib.request.urlopen(f"http://{address}:{port}/_stcore/health", timeout=5).read()
        printed = log_path.read_text()
        assert f"Students open:  {url}" in printed and "not private" in printed and "█" in printed
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
