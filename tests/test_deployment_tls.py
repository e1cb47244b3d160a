"""TLS and node authentication end to end on 127.0.0.1, with keys made by ``fedreplay pki``:
a registered SuperNode trains a real run; an unregistered node and a node that trusts
another CA are refused by the SuperLink."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/flower_helpers.py (importlib mode)
from flower_helpers import (
    BIN,
    TINY,
    check_completed_run,
    clean_env,
    fedreplay,
    free_port,
    run_script,
    start,
    stop_all,
    wait_for_port,
)


@pytest.mark.slow
def test_registered_node_trains_unregistered_and_wrong_ca_nodes_are_refused(
    tmp_path: Path,
) -> None:
    port = free_port()
    home = tmp_path / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "tls"\n\n[superlink.tls]\n'
        f'address = "127.0.0.1:{port}"\nroot-certificates = "{tmp_path / "pki" / "ca.crt"}"\n',
        encoding="utf-8",
    )
    env = clean_env(FLWR_HOME=str(home), FEDREPLAY_SERVER_DIR=str(tmp_path / "server"))
    fedreplay("pki", "init", "--dir", "pki", "--host", "127.0.0.1", cwd=tmp_path, env=env)
    for name in ("site-a", "site-b"):  # at the sites: their private keys never leave them
        fedreplay("pki", "add-site", "--dir", "site-pki", name, cwd=tmp_path, env=env)
    fedreplay("pki", "init", "--dir", "other-ca", "--host", "127.0.0.1", cwd=tmp_path, env=env)
    pki = tmp_path / "pki"
    procs, handles = [], []
    try:
        superlink = [
            str(BIN / "flower-superlink"), "--host", "127.0.0.1", "--port", str(port),
            "--ssl-ca-certfile", str(pki / "ca.crt"), "--ssl-certfile", str(pki / "server.pem"),
            "--ssl-keyfile", str(pki / "server.key"), "--enable-supernode-auth",
            "--disable-runtime-dependency-installation",
        ]  # fmt: skip
        proc, fh = start(superlink, env=env, log=tmp_path / "superlink.log", cwd=tmp_path)
        procs.append(proc)
        handles.append(fh)
        wait_for_port(port, 45, proc)
        out = fedreplay(
            "pki",
            "register",
            "--dir",
            "pki",
            "site-a",
            "--pub",  # the public key site-a sent
            str(tmp_path / "site-pki" / "sites" / "site-a" / "site-a.pub"),
            "--connection",
            "tls",
            cwd=tmp_path,
            env=env,
        )
        assert "registered as node" in out
        assert not (pki / "sites" / "site-a" / "site-a").exists(), "no private key here"
        # the ServerApp binds site id site-a to the node its key was registered as
        bindings = json.loads((tmp_path / "server" / "site_nodes.json").read_text())
        assert str(bindings["site-a"]) in out
        # the site's operator writes its policy; the site names itself as registered
        site_dir = tmp_path / "site-a-state"
        fedreplay("site", "init", "--dir", str(site_dir), "--no-dp-required", cwd=tmp_path, env=env)

        def supernode(key: str, ca: Path, name: str) -> subprocess.Popen:
            cmd = [
                str(BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{port}",
                "--root-certificates", str(ca), "--auth-supernode-private-key",
                str(tmp_path / "site-pki" / "sites" / key / key), "--host", "127.0.0.1",
                "--port", str(free_port()), "--max-wait-time", "30",
                "--node-config", f'site-id="{key}"',
            ]  # fmt: skip
            site_env = clean_env(
                FLWR_HOME=str(tmp_path / f"home-{name}"), FEDREPLAY_SITE_DIR=str(site_dir)
            )
            p, h = start(cmd, env=site_env, log=tmp_path / f"{name}.log", cwd=tmp_path)
            procs.append(p)
            handles.append(h)
            return p

        supernode("site-a", pki / "ca.crt", "registered")
        unregistered = supernode("site-b", pki / "ca.crt", "unregistered")
        wrong_ca = supernode("site-a", tmp_path / "other-ca" / "ca.crt", "wrong-ca")
        result = run_script(
            ["--connection", "tls", "--sites", "1", "--set", TINY,
             "--output-dir", str(tmp_path / "runs"), "--timeout", "200"],
            env=env,
            timeout=240,
        )  # fmt: skip
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in tmp_path.glob("*.log"))
        assert result.returncode == 0, result.describe() + logs
        check_completed_run(Path(result.last_line), tasks=2, sites=1)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and None in (unregistered.poll(), wrong_ca.poll()):
            time.sleep(1)
        assert unregistered.poll() not in (None, 0) and wrong_ca.poll() not in (None, 0), logs
        assert "Failed to activate SuperNode" in (tmp_path / "unregistered.log").read_text()
        assert "CERTIFICATE_VERIFY_FAILED" in (tmp_path / "wrong-ca.log").read_text()
    finally:
        stop_all(procs, handles)


def test_pki_refuses_to_overwrite_a_key_and_checks_names(tmp_path: Path) -> None:
    from server import pki

    pki.init(tmp_path, ["127.0.0.1", "superlink.example.org"])
    keys = pki.add_site(tmp_path, "site-a")
    before = keys.private_key.read_bytes()
    with pytest.raises(pki.PKIError, match="never overwritten"):
        pki.add_site(tmp_path, "site-a")
    assert keys.private_key.read_bytes() == before
    assert oct(keys.private_key.stat().st_mode & 0o777) == "0o600"
    with pytest.raises(pki.PKIError, match="site name"):
        pki.add_site(tmp_path, "../etc")
    with pytest.raises(pki.PKIError, match="--force"):
        pki.init(tmp_path, ["127.0.0.1"])
    with pytest.raises(pki.PKIError, match="neither an IP"):
        pki.init(tmp_path, ["bad host!"], force=True)


def test_the_operator_keeps_only_the_public_key_a_site_sent(tmp_path: Path) -> None:
    """`fedreplay pki register NAME --pub FILE`: the site makes its own key pair; the
    operator keeps its .pub under sites/NAME/. A private key sent by mistake, a key of
    another kind, or a second key under a registered name is refused and nothing copied."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from server import pki

    site = pki.add_site(tmp_path / "at-site", "site-a")
    operator = tmp_path / "operator"
    kept = pki.receive_public_key(operator, "site-a", site.public_key)
    assert kept == operator / "sites" / "site-a" / "site-a.pub"
    assert pki.fingerprint(kept) == site.fingerprint
    assert pki.receive_public_key(operator, "site-a", site.public_key) == kept  # idempotent
    with pytest.raises(pki.PKIError, match="PRIVATE key: it must never leave the site"):
        pki.receive_public_key(operator, "site-b", site.private_key)
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    wrong = tmp_path / "p256.pub"
    wrong.write_bytes(
        p256.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    )
    with pytest.raises(pki.PKIError, match="not an EC P-384 key"):
        pki.receive_public_key(operator, "site-b", wrong)
    other = pki.add_site(tmp_path / "elsewhere", "site-a")
    with pytest.raises(pki.PKIError, match="already holds another key"):
        pki.receive_public_key(operator, "site-a", other.public_key)
    assert not (operator / "sites" / "site-b").exists()
    assert pki.fingerprint(kept) == site.fingerprint
