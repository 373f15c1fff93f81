"""Dask servers: the dashboard is off unless asked for (then on 127.0.0.1), and TLS to a scheduler works.

The TLS example, step by step (what a user does against a remote scheduler)::

    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 \\
        -addext subjectAltName=IP:127.0.0.1 -keyout key.pem -out cert.pem
    dask scheduler --host 127.0.0.1 --protocol tls --tls-ca-file cert.pem --tls-cert cert.pem --tls-key key.pem
    shrinkviz sweep sweep.yaml --scheduler tls://127.0.0.1:8786 \\
        --tls-ca-file cert.pem --tls-cert cert.pem --tls-key key.pem
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import urllib.error
import urllib.request

import pytest

from shrinkviz.experiments.executors import DaskExecutor, tls_security


def _self_signed(folder):
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_path), str(key_path)


def _square(x):
    return x * x


def test_dashboard_is_off_by_default():
    ex = DaskExecutor(n_workers=1)
    with ex:
        ex.start()
        assert ex.dashboard_link is None
        port = ex.client.scheduler_info()["services"]["dashboard"]  # the HTTP server: health and metrics
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5)  # no dashboard pages
        assert set(_http_sockets(ex.client)) == {"127.0.0.1"}
        assert ex.cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert [r for _, r, _ in ex.map_unordered(_square, [3])] == [9]


def _http_sockets(client):
    return client.run_on_scheduler(
        lambda dask_scheduler: [s.getsockname()[0] for s in dask_scheduler.http_server._sockets.values()]
    )


def test_dashboard_when_asked_is_bound_to_loopback():
    with DaskExecutor(n_workers=1, processes=False, dashboard=True) as ex:
        ex.start()
        link = ex.dashboard_link
        assert link.startswith("http://127.0.0.1:") and set(_http_sockets(ex.client)) == {"127.0.0.1"}
        try:
            import bokeh  # noqa: F401 - the dashboard pages need it
        except ImportError:
            return
        with urllib.request.urlopen(link, timeout=10) as page:
            assert page.status == 200


def test_tls_connection_to_a_scheduler_on_loopback(tmp_path):
    from distributed import LocalCluster

    cert, key = _self_signed(tmp_path)
    security = tls_security(cert, cert, key)
    cluster = LocalCluster(
        n_workers=1,
        processes=False,
        host="127.0.0.1",
        protocol="tls://",
        security=security,
        dashboard_address=None,
        silence_logs=40,
    )
    try:
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
        with DaskExecutor(address=cluster.scheduler_address, security=security, connect_timeout=10) as ex:
            ex.start()
            assert [r for _, r, _ in ex.map_unordered(_square, [7])] == [49]
        plain = DaskExecutor(address=cluster.scheduler_address, connect_timeout=2)
        with pytest.raises(ConnectionError, match="it needs TLS certificates .*--tls-ca-file"):
            plain.start()  # without the certificates the TLS scheduler refuses the connection
        plain.close()
    finally:
        cluster.close()


def test_tls_files_must_exist(tmp_path):
    with pytest.raises(ValueError, match=r"TLS CA file .*nope\.pem not found; pass existing PEM files"):
        tls_security(str(tmp_path / "nope.pem"), str(tmp_path / "c.pem"))


def test_cli_sweep_over_tls_with_a_security_block(tmp_path, capsys):
    from distributed import LocalCluster

    from shrinkviz.cli import main

    cert, key = _self_signed(tmp_path)
    cluster = LocalCluster(
        n_workers=1,
        processes=False,
        protocol="tls://",
        security=tls_security(cert, cert, key),
        dashboard_address=None,
        silence_logs=40,
    )
    try:
        config = tmp_path / "sweep.yaml"
        config.write_text(
            "base: {model: tiny_mlp, data: {name: digits, train: 64, val: 16, test: 32}, baseline: {epochs: 1},"
            " latency: {runtimes: []}}\n"
            "store: results\n"
            "security: {tls_ca_file: cert.pem, tls_cert: cert.pem, tls_key: key.pem}\n"
        )
        address = cluster.scheduler_address
        assert main(["sweep", str(config), "--scheduler", address, "--quiet"]) == 0
        assert "1 runs: 1 ran (0 failed)" in capsys.readouterr().out
        config.write_text(config.read_text().replace("tls_key:", "tls_kye:"))
        assert main(["sweep", str(config), "--scheduler", address, "--quiet"]) == 2
        assert "unknown security key 'tls_kye'; did you mean 'tls_key'" in capsys.readouterr().err
    finally:
        cluster.close()
