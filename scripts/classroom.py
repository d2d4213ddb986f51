"""Classroom mode: serve the Studio over HTTPS on the local network, so students' phones can join.

    make classroom            # or: .venv/bin/python scripts/classroom.py [--port 8501]

Browsers give the microphone and camera only to https pages (or localhost), so a phone opening
http://<laptop>:8501 could not record. This makes a self-signed certificate for the laptop's LAN
address on first use (``cryptography``, kept in runs/classroom/, never downloaded), prints the
address and its QR code, explains the browser's one-time certificate warning, and starts Streamlit
with TLS on every interface. The app's sidebar shows the same QR code for the class to scan.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from studio.classroom import CERT_WARNING, URL_ENV, ensure_certificate, lan_address, qr_text  # noqa: E402


def command(port: int, cert: Path, key: Path, address: str) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"),
            "--server.address", "0.0.0.0", "--server.port", str(port),
            "--server.sslCertFile", str(cert), "--server.sslKeyFile", str(key),
            "--browser.serverAddress", address, "--browser.serverPort", str(port)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8501)))
    parser.add_argument("--address", default=None, help="the LAN address to announce (default: found automatically)")
    parser.add_argument("--cert-dir", default=str(REPO / "runs" / "classroom"))
    parser.add_argument("--dry-run", action="store_true", help="make the certificate, print everything, start nothing")
    args = parser.parse_args(argv)
    address = args.address or lan_address()
    url = f"https://{address}:{args.port}"
    hosts = [address, "127.0.0.1", "localhost", socket.gethostname()]
    cert, key, made = ensure_certificate(Path(args.cert_dir), hosts)
    print(f"{'Made' if made else 'Using'} the classroom certificate {cert} (for {', '.join(dict.fromkeys(hosts))}).")
    if address.startswith("127."):
        print("warning: no local network found; only this machine can open the Studio.", file=sys.stderr)
    print()
    print(qr_text(url))
    print(f"  Students open:  {url}")
    print(f"  On this laptop: https://localhost:{args.port}")
    print()
    print(CERT_WARNING.replace("**", ""))
    print()
    cmd = command(args.port, cert, key, address)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    sys.stdout.flush()
    os.execve(sys.executable, cmd, {**os.environ, URL_ENV: url})
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
