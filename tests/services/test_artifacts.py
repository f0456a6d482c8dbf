"""artifacts.py: signed expiring URL prefixes and the real blueprint in a minimal Flask app."""

import shutil
import subprocess
import threading
import time

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from kernel.exceptions import ConfigError
from kernel.server.core.settings import check, defaults
from kernel.server.services import api as services_api
from kernel.server.services import artifacts
from kernel.server.services.artifacts import ArtifactConfigError, sign, verify

KEY = b"k" * 32
NOW = 1_700_000_000


# --- pure signing ---------------------------------------------------------------------------


def test_sign_and_verify():
    sig = sign(KEY, "sums", NOW + 60)
    assert len(sig) == 64
    assert verify(KEY, "sums", str(NOW + 60), sig, now=NOW) is None
    assert verify(KEY, "sums", str(NOW + 60), sig, now=NOW + 60) is None  # last valid second
    assert verify(KEY, "sums", str(NOW + 60), sig, now=NOW + 61) == "expired"


@pytest.mark.parametrize(
    ("name", "expires", "sig"),
    [
        ("other", str(NOW + 60), None),  # signed for sums, used for another service
        ("sums", str(NOW + 61), None),  # expiry moved
        ("sums", str(NOW + 60), "0" * 64),
        ("sums", str(NOW + 60), ""),
        ("sums", str(NOW + 60), "é" * 64),
        ("sums", "-1", None),
        ("sums", "12e5", None),
        ("sums", "9" * 40, None),
        ("sums", "١٢٣", None),  # non-ASCII digits
        ("../x", str(NOW + 60), None),
    ],
)
def test_verify_refuses_tampering(name, expires, sig):
    good = sign(KEY, "sums", NOW + 60)
    assert verify(KEY, name, expires, good if sig is None else sig, now=NOW) == "bad signature"


def test_other_key_fails():
    sig = sign(KEY, "sums", NOW + 60)
    assert verify(b"x" * 32, "sums", str(NOW + 60), sig, now=NOW) == "bad signature"


def test_service_url():
    url = artifacts.service_url("https://k.example/", KEY, "sums", ttl=3600, now=NOW + 0.7)
    assert (
        url == f"https://k.example/service-files/sums/{NOW + 3600}/{sign(KEY, 'sums', NOW + 3600)}"
    )
    with pytest.raises(ValueError, match="not allowed"):
        artifacts.service_url("https://k", KEY, "a/../b", ttl=1, now=NOW)


def test_signing_key_from_config():
    derived = artifacts.signing_key({"SECRET_KEY": "s3cret"})
    assert derived != b"s3cret" and len(derived) == 32
    assert artifacts.signing_key({"SECRET_KEY": b"s3cret"}) == derived
    assert artifacts.signing_key({"SECRET_KEY": "s", "ARTIFACT_KEY": "own"}) == b"own"
    with pytest.raises(ArtifactConfigError, match="SECRET_KEY"):
        artifacts.signing_key({})


def test_service_url_for():
    cfg = {"SECRET_KEY": "s", "ARTIFACT_TTL": 60.0}
    url = artifacts.service_url_for(cfg, "sums", kernel_url="http://127.0.0.1:8002", now=NOW)
    assert url.startswith(f"http://127.0.0.1:8002/service-files/sums/{NOW + 60}/")
    for ttl in (0, -5, "soon", True):  # refused with the other settings, at start-up
        with pytest.raises(ConfigError, match="KERNEL_ARTIFACT_TTL"):
            check({**defaults(), "ARTIFACT_TTL": ttl})


# --- the blueprint --------------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    svc = d / "service" / "sums"
    (svc / "web").mkdir(parents=True)
    (svc / "sums.tgz").write_bytes(b"\x1f\x8b" + bytes(range(256)) * 40)
    (svc / "deploy.sh").write_text("echo deploy\n")
    (svc / "web" / "index.html").write_text("<p>hi</p>")
    (svc / ".hidden").write_text("h")
    (svc / "my file").write_text("odd")
    (svc / "inside").symlink_to("web/index.html")
    (svc / "outside").symlink_to(tmp_path / "secret")
    (svc / "outdir").symlink_to(tmp_path)
    (tmp_path / "secret").write_text("secret")
    (d / "service" / "other").mkdir()
    (d / "service" / "other" / "x").write_text("x")
    (d / "init").mkdir()
    (d / "init" / "10-motd.sh").write_text("echo motd\n")
    return d


class BufferedClient(FlaskClient):
    """Reads each answer fully, so send_file's open file is closed (warnings are errors)."""

    def open(self, *args, **kwargs):
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


def make_app(data_dir, **config):
    # A static folder, as the real app has one: our /static/service routes must still win.
    static = data_dir.parent / "static"
    static.mkdir(exist_ok=True)
    app = Flask(__name__, static_folder=str(static))
    app.config.update(defaults())
    app.config.update(
        SECRET_KEY="test-secret",
        DATA_DIR=str(data_dir),
        URL="http://127.0.0.1:8002",
        TESTING=True,
        **config,
    )
    check(app.config)  # as create_app does: "yes" becomes True, and so on
    app.register_blueprint(services_api.artifacts_bp)
    app.test_client_class = BufferedClient
    return app


@pytest.fixture
def client(data_dir):
    return make_app(data_dir).test_client()


def prefix(name="sums", ttl=60, now=None):
    cfg = {"SECRET_KEY": "test-secret", "ARTIFACT_TTL": float(ttl)}
    url = artifacts.service_url_for(cfg, name, kernel_url="http://127.0.0.1:8002", now=now)
    return url.removeprefix("http://127.0.0.1:8002")


def test_signed_download(client, data_dir):
    r = client.get(prefix() + "/sums.tgz")
    assert r.status_code == 200
    assert r.data == (data_dir / "service/sums/sums.tgz").read_bytes()
    assert r.mimetype == "application/octet-stream"
    assert "Content-Encoding" not in r.headers  # clients must not unpack the .tgz
    assert r.headers["Cache-Control"] == "private, no-store"
    assert client.get(prefix() + "/web/index.html").data == b"<p>hi</p>"
    assert client.get(prefix() + "/inside").data == b"<p>hi</p>"
    assert client.get(prefix() + "/deploy.sh").mimetype == "text/plain"


def test_head_and_range(client):
    assert client.head(prefix() + "/sums.tgz").status_code == 200
    r = client.get(prefix() + "/sums.tgz", headers={"Range": "bytes=0-1"})
    assert (r.status_code, r.data) == (206, b"\x1f\x8b")


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/web",
        "/.hidden",
        "/my%20file",
        "/outside",
        "/outdir/secret",
        "/../other/x",
        "/%2e%2e/other/x",
        "/web/../sums.tgz",
        "/./sums.tgz",
        "/sums.tgz/",
        "/" + "a/" * 600 + "b",
    ],
)
def test_refused_paths_are_404(client, path):
    r = client.get(prefix() + path)
    assert r.status_code == 404
    assert r.data == b"404 not found\n"


def test_bad_signatures_are_403_before_the_disk_is_looked_at(client):
    good = prefix()
    name, expires, sig = good.split("/")[2:5]
    base = "/service-files"
    cases = [
        f"{base}/{name}/{expires}/{'0' * 64}/sums.tgz",
        f"{base}/{name}/{expires}/{'0' * 64}/nope",  # same answer for a missing file
        f"{base}/other/{expires}/{sig}/x",  # the prefix of one service opens no other
        f"{base}/{name}/{int(expires) + 1}/{sig}/sums.tgz",
        f"{base}/{name}/soon/{sig}/sums.tgz",
        f"{base}/a%20b/{expires}/{sig}/sums.tgz",
    ]
    for url in cases:
        r = client.get(url)
        assert (r.status_code, r.data) == (403, b"403 forbidden: bad signature\n"), url
    r = client.get(prefix(now=time.time() - 3600) + "/sums.tgz")
    assert (r.status_code, r.data) == (403, b"403 forbidden: expired\n")


def test_public_paths_are_off_by_default(client):
    assert client.get("/static/service/sums/sums.tgz").status_code == 404
    assert client.get("/static/init/10-motd.sh").status_code == 404


@pytest.mark.parametrize("setting", [True, "true", "1", "yes", "on"])
def test_public_paths_when_enabled(data_dir, setting):
    client = make_app(data_dir, PUBLIC_ARTIFACTS=setting).test_client()
    assert client.get("/static/service/sums/sums.tgz").status_code == 200
    assert client.get("/static/init/10-motd.sh").data == b"echo motd\n"
    for bad in ("/static/service/sums/outside", "/static/init/../service/sums/sums.tgz"):
        assert client.get(bad).status_code == 404
    assert client.get("/static/service/a%20b/x").status_code == 404


@pytest.mark.parametrize("setting", [False, "false", "0", "", "off", "no"])
def test_public_paths_stay_off(data_dir, setting):
    client = make_app(data_dir, PUBLIC_ARTIFACTS=setting).test_client()
    assert client.get("/static/service/sums/sums.tgz").status_code == 404


def test_resolve_refuses_a_missing_root(tmp_path):
    assert artifacts.resolve(tmp_path / "none", "x") is None


# --- wget and curl against a real server on loopback ----------------------------------------


@pytest.fixture
def live_url(data_dir):
    server = make_server("127.0.0.1", 0, make_app(data_dir))
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        t.join(5)
        server.server_close()


@pytest.mark.parametrize("tool", ["curl", "wget"])
def test_download_with_real_clients(live_url, data_dir, tmp_path, tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    service_url = live_url + prefix()
    out = tmp_path / "got.tgz"
    argv = {
        "curl": ["curl", "-fsS", "-o", str(out), f"{service_url}/sums.tgz"],
        "wget": ["wget", "-q", "-O", str(out), f"{service_url}/sums.tgz"],
    }[tool]
    subprocess.run(argv, check=True, timeout=30)
    assert out.read_bytes() == (data_dir / "service/sums/sums.tgz").read_bytes()
    bad = subprocess.run([*argv[:-1], f"{live_url}{prefix()}/nope"], timeout=30)
    assert bad.returncode != 0


def test_registered_in_the_real_app(tmp_path):
    from kernel.server.app import create_app
    from kernel.server.web.access import unguarded_endpoints

    data = tmp_path / "kdata"
    (data / "service" / "sums").mkdir(parents=True)
    (data / "service" / "sums" / "sums.tgz").write_bytes(b"tgz")
    app = create_app({"DATA_DIR": str(data), "URL": "http://127.0.0.1:8002", "TESTING": True})
    app.test_client_class = BufferedClient
    assert not [e for e in unguarded_endpoints(app) if e.startswith("artifacts.")]
    url = artifacts.service_url_for(app.config, "sums", kernel_url="http://127.0.0.1:8002")
    client = app.test_client()
    r = client.get(url.removeprefix("http://127.0.0.1:8002") + "/sums.tgz")
    assert (r.status_code, r.data) == (200, b"tgz")
    assert client.get("/static/service/sums/sums.tgz").status_code == 404
