"""The install one-liner pinned to the server's TLS key when the public URL is https (issue 9):
``curl -fsSL [--insecure] --pinnedpubkey 'sha256//…' '<url>' | bash``, and install.sh's own
downloads and enrollment through the same pin.

Real parts on loopback: a ``kernel-server`` behind a TLS terminator (tests/support/tlsproxy.py)
with a self-signed certificate or one from a private CA, and the real curl. The line is run
here only up to the script it fetches (``| bash`` would install an agent on this machine); the
whole line runs inside full test hosts in test_e2e_tls.py."""

from __future__ import annotations

import logging
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kernel.exceptions import ConfigError
from kernel.server.inventory import tlspin
from kernel.server.inventory.enrollment import install_command
from kernel.server.inventory.tlspin import PinSource, ServerPin, check_pins, spki_pin
from support.procs import free_port, wait_for
from support.servers import KERNEL_SERVER, ServerProc
from support.tlsproxy import TlsProxy, make_ca_signed_cert, make_cert, openssl_pin

CURL_PIN_MISMATCH = 90  # curl's CURLE_SSL_PINNEDPUBKEYNOTMATCH


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("certs")
    cert, key = make_cert(d, "self", "127.0.0.1")
    other, _ = make_cert(d, "other", "127.0.0.1")
    ca, signed, signed_key = make_ca_signed_cert(d, "127.0.0.1")
    return {"cert": cert, "key": key, "other": other, "ca": ca, "signed": signed,
            "signed_key": signed_key}  # fmt: skip


def der(cert: Path) -> bytes:
    return subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-outform", "der"], capture_output=True, check=True
    ).stdout


# -- the pin and the line ----------------------------------------------------------------------
def test_pin_is_what_curl_and_openssl_compute(certs):
    assert spki_pin(der(certs["cert"])) == openssl_pin(certs["cert"])
    assert spki_pin(der(certs["cert"])) != spki_pin(der(certs["other"]))


def test_line_carries_the_pin_and_insecure_only_when_needed():
    pin = "sha256//" + "A" * 43 + "="
    url = "https://k.example/agent/install.sh?token=ke_x"
    assert install_command("https://k.example", "ke_x") == f"curl -fsSL '{url}' | bash"
    assert install_command("https://k.example", "ke_x", ServerPin(pin, verified=True)) == (
        f"curl -fsSL --pinnedpubkey '{pin}' '{url}' | bash"
    )
    assert install_command("https://k.example", "ke_x", ServerPin(pin, verified=False)) == (
        f"curl -fsSL --insecure --pinnedpubkey '{pin}' '{url}' | bash"
    )


@pytest.mark.parametrize(
    "bad", ["", "sha256//", "sha256//short=", "md5//" + "A" * 43 + "=", "A" * 44,
            "sha256//" + "A" * 43 + "='; rm -rf /; '", "sha256//" + "A" * 43 + "=;x"],
)  # fmt: skip
def test_a_bad_tls_pin_is_refused(bad):
    with pytest.raises(ConfigError, match="TLS_PIN"):
        check_pins(bad)


def test_several_pins_for_a_key_rotation():
    a, b = "sha256//" + "A" * 43 + "=", "sha256//" + "B" * 43 + "="
    assert check_pins(f" {a} ; {b} ") == f"{a};{b}"


def test_a_bad_tls_pin_stops_the_server_with_one_line(tmp_path):
    srv = ServerProc(tmp_path, KERNEL_TLS_PIN="sha256//nope")
    out = subprocess.run(
        [str(KERNEL_SERVER)], env=srv.env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0
    assert "TLS_PIN" in out.stderr and "Traceback" not in out.stderr, out.stderr


# -- where the pin comes from ------------------------------------------------------------------
@pytest.fixture
def tls_listener(certs) -> Iterator[TlsProxy]:
    with TlsProxy(certs["cert"], certs["key"], ("127.0.0.1", 9), "127.0.0.1") as proxy:
        yield proxy


def test_pin_is_fetched_from_the_url_once(tls_listener, certs, monkeypatch):
    calls = []
    real = tlspin.fetch
    monkeypatch.setattr(tlspin, "fetch", lambda *a: calls.append(a) or real(*a))
    pins = PinSource(None, tls_listener.url)
    first = pins.for_url(tls_listener.url)
    assert first == ServerPin(openssl_pin(certs["cert"]), verified=False)
    assert pins.for_url(tls_listener.url) == first
    assert len(calls) == 1
    assert pins.for_url("http://127.0.0.1:9") is None  # plain http: no pin


def test_configured_pin_wins_and_a_mismatch_is_logged(tls_listener, certs, caplog):
    other = openssl_pin(certs["other"])
    with caplog.at_level(logging.WARNING):
        got = PinSource(other, tls_listener.url).for_url(tls_listener.url)
    assert got == ServerPin(other, verified=False)
    assert "TLS_PIN does not match" in caplog.text


def test_unreachable_url_logs_and_shows_the_unpinned_line(caplog):
    url = f"https://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING):
        assert PinSource(None, url, timeout=1).for_url(url) is None
        pinned = "sha256//" + "A" * 43 + "="
        # With TLS_PIN set the line is pinned anyway (and skips a CA check it cannot know).
        got = PinSource(pinned, url, timeout=1).for_url(url)
        assert got == ServerPin(pinned, verified=False)
    assert "cannot read the TLS certificate" in caplog.text


def test_a_failed_fetch_is_retried_in_the_background(certs, monkeypatch):
    monkeypatch.setattr(tlspin, "RETRY_AFTER", 0.0)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    pins = PinSource(None, url, timeout=1)
    assert pins.for_url(url) is None  # nothing there yet
    with TlsProxy(certs["cert"], certs["key"], ("127.0.0.1", 9), "127.0.0.1", port):
        # Each call answers at once (unpinned) while a retry runs; then the pin is there.
        got = wait_for(lambda: pins.for_url(url), 10)
    assert got == ServerPin(openssl_pin(certs["cert"]), verified=False)


def test_warm_reads_the_pin_before_any_request(tls_listener, monkeypatch):
    calls = []
    real = tlspin.fetch
    monkeypatch.setattr(tlspin, "fetch", lambda *a: calls.append(a) or real(*a))
    pins = PinSource(None, tls_listener.url)
    pins.warm()
    wait_for(lambda: calls, 10)
    assert pins.for_url(tls_listener.url) is not None
    assert len(calls) == 1


def test_only_the_url_setting_is_ever_fetched(tls_listener, monkeypatch):
    """A line to another base (URL unset: the request's Host) gets TLS_PIN or no pin; the
    server never connects where a request's Host header points."""
    monkeypatch.setattr(tlspin, "fetch", lambda *a: pytest.fail(f"fetched {a}"))
    assert PinSource(None, None).for_url(tls_listener.url) is None
    assert PinSource(None, "https://kernel.example").for_url(tls_listener.url) is None
    pinned = "sha256//" + "A" * 43 + "="
    assert PinSource(pinned, None).for_url(tls_listener.url) == ServerPin(pinned, False)


def test_a_host_header_does_not_make_the_server_connect(tmp_path, tls_listener):
    """``/static/agent/install.sh`` needs no login and, with URL unset, takes its base from
    the request: a Host header naming some TLS service is not contacted."""
    srv = ServerProc(
        tmp_path, KERNEL_URL="", KERNEL_STATUS_POLLER="false", KERNEL_TRUSTED_PROXY="127.0.0.1"
    )
    srv.start()
    try:
        seen = tls_listener.accepted
        r = httpx.get(srv.url + "/static/agent/install.sh",
                      headers={"Host": f"127.0.0.1:{tls_listener.port}",
                               "X-Forwarded-Proto": "https"})  # fmt: skip
        assert r.status_code == 200
        assert "KERNEL_TLS_PIN" not in r.text.split("\n# Install (or update)", 1)[0]
        assert tls_listener.accepted == seen
    finally:
        srv.stop()


# -- a real server behind a TLS terminator -----------------------------------------------------
def start_behind_tls(
    tmp_path: Path, cert: Path, key: Path, **env: str
) -> tuple[ServerProc, TlsProxy]:
    data = tmp_path / "data"
    data.mkdir()
    srv = ServerProc(data, KERNEL_TRUSTED_PROXY="127.0.0.1", KERNEL_STATUS_POLLER="false", **env)
    proxy = TlsProxy(cert, key, ("127.0.0.1", srv.port), "127.0.0.1").__enter__()
    srv.env["KERNEL_URL"] = proxy.url
    srv.start()
    srv.login()
    return srv, proxy


@pytest.fixture
def behind_tls(tmp_path: Path) -> Iterator[list[tuple[ServerProc, TlsProxy]]]:
    made: list[tuple[ServerProc, TlsProxy]] = []
    yield made
    for srv, proxy in made:
        srv.stop()
        proxy.__exit__()


def new_line(srv: ServerProc) -> str:
    with srv.api() as api:
        r = api.post("/api/v1/servers", json={"name": f"h{free_port()}"})
        assert r.status_code == 201, r.text
        return str(r.json()["enroll"]["command"])


def fetch_only(line: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The line with ``| bash`` replaced by a file: what bash would have been fed."""
    assert line.endswith(" | bash")
    cmd = "set -o pipefail; " + line[: -len(" | bash")] + " -o fed.sh"
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", **env})  # fmt: skip


def test_self_signed_line_is_pinned_and_insecure(tmp_path, certs, behind_tls):
    srv, proxy = start_behind_tls(tmp_path, certs["cert"], certs["key"])
    behind_tls.append((srv, proxy))
    line = new_line(srv)
    pin = openssl_pin(certs["cert"])
    assert re.fullmatch(
        rf"curl -fsSL --insecure --pinnedpubkey '{re.escape(pin)}' "
        rf"'{re.escape(proxy.url)}/agent/install\.sh\?token=ke_[\w-]+' \| bash",
        line,
    ), line
    out = fetch_only(line, tmp_path)
    assert out.returncode == 0, out.stderr
    script = (tmp_path / "fed.sh").read_text()
    assert f"KERNEL_TLS_PIN={pin}" in script and "KERNEL_TLS_INSECURE=1" in script
    assert f"KERNEL_AGENT_SOURCE={proxy.url}/agent/kernel-agent.py" in script


def test_ca_signed_line_is_pinned_without_insecure(tmp_path, certs, behind_tls):
    # The server trusts the private CA (as a machine trusts the public ones), so its
    # certificate verifies: the line keeps curl's CA check, and adds the pin.
    srv, proxy = start_behind_tls(
        tmp_path, certs["signed"], certs["signed_key"], SSL_CERT_FILE=str(certs["ca"])
    )
    behind_tls.append((srv, proxy))
    line = new_line(srv)
    assert line.startswith(f"curl -fsSL --pinnedpubkey '{openssl_pin(certs['signed'])}' "), line
    out = fetch_only(line, tmp_path, CURL_CA_BUNDLE=str(certs["ca"]))
    assert out.returncode == 0, out.stderr
    assert "KERNEL_TLS_INSECURE=''" in (tmp_path / "fed.sh").read_text()


def test_wrong_pin_curl_refuses_and_feeds_nothing(tmp_path, certs, behind_tls):
    srv, proxy = start_behind_tls(
        tmp_path, certs["cert"], certs["key"], KERNEL_TLS_PIN=openssl_pin(certs["other"])
    )
    behind_tls.append((srv, proxy))
    line = new_line(srv)
    assert openssl_pin(certs["other"]) in line
    out = fetch_only(line, tmp_path)
    assert out.returncode == CURL_PIN_MISMATCH, (out.returncode, out.stderr)
    assert not (tmp_path / "fed.sh").exists() or (tmp_path / "fed.sh").read_text() == ""


def test_install_script_downloads_through_the_pin(tmp_path, certs, behind_tls):
    """The served script, run into a scratch root (no systemd, no enrollment): the agent file
    comes through the pin; with a wrong pin nothing is installed."""
    srv, proxy = start_behind_tls(tmp_path, certs["cert"], certs["key"])
    behind_tls.append((srv, proxy))
    assert fetch_only(new_line(srv), tmp_path).returncode == 0
    script = tmp_path / "fed.sh"
    env = {"KERNEL_AGENT_NO_SYSTEMD": "1", "KERNEL_ENROLL_TOKEN": "", "HOME": str(tmp_path)}

    def install(root: Path, **more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin", **env, "KERNEL_AGENT_ROOT": str(root),
                                   **more})  # fmt: skip

    good = install(tmp_path / "good")
    assert good.returncode == 0, good.stderr
    assert (tmp_path / "good/usr/local/lib/kernel-agent/kernel_agent.py").is_file()

    wrong = install(tmp_path / "wrong", KERNEL_TLS_PIN=openssl_pin(certs["other"]))
    assert wrong.returncode != 0
    assert "with the server's TLS pin" in wrong.stderr, wrong.stderr
    assert not (tmp_path / "wrong").exists() or not any((tmp_path / "wrong").rglob("*.py"))


def test_plain_http_line_is_unchanged(server_proc):
    server_proc.start()
    server_proc.login()
    line = new_line(server_proc)
    assert line.startswith(f"curl -fsSL {shlex.quote(server_proc.url)}/agent/install.sh") or (
        line.startswith(f"curl -fsSL '{server_proc.url}/agent/install.sh?token=")
    ), line
    assert "pinnedpubkey" not in line
    r = httpx.get(server_proc.url + "/agent/install.sh")
    assert "KERNEL_TLS_PIN=" not in r.text.split("\n# Install (or update)", 1)[0]
