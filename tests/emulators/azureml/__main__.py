"""``python -m tests.emulators.azureml --docker-host unix://... --cert-dir DIR``: serve the Azure ML
emulator over HTTPS until SIGTERM (see README.md). Writes DIR/cert.pem (a self-signed certificate
for 127.0.0.1, the CA bundle clients trust) and then ``--port-file`` once it listens."""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import logging
import os
import secrets
import ssl
import sys
from pathlib import Path


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost and its key (cryptography, azure-identity's
    own dependency)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "azureml-emulator")])
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.emulators.azureml")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", help="write the port here once listening")
    parser.add_argument("--cert-dir", required=True, help="where cert.pem and key.pem are made")
    parser.add_argument("--identity-header", required=True,
                        help="the IDENTITY_HEADER value the managed identity endpoint expects")
    parser.add_argument("--docker-host", required=True, help="the engine deployments run on")
    parser.add_argument("--location", default="eastus")
    parser.add_argument("--startup-timeout", type=float, default=60.0,
                        help="seconds a deployment's containers have to pass their probes")
    parser.add_argument("--label", default=f"mlsv-aml-{os.getpid()}",
                        help="label (and name prefix) of every container started")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    from .api import Store
    from .containers import Docker
    from .server import make_server
    from .. import serve_until_signalled

    cert, key = self_signed(Path(args.cert_dir))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    docker = Docker(args.docker_host, args.label)
    store = Store(docker, args.location, "", args.startup_timeout, secrets.token_urlsafe(24))
    server = make_server(store, args.host, args.port, context, args.identity_header)
    port = server.server_address[1]
    store.base_url = f"https://{args.host}:{port}"
    logging.info("Azure ML emulator listening on %s", store.base_url)
    serve_until_signalled(server, args.port_file, docker.remove_all)
    return 0


if __name__ == "__main__":
    sys.exit(main())
