"""Files through the in-process app: uploads (streamed, capped, pruned), the signed download
URLs of pushes, the push's refusals, and fetching from a real agent on loopback; the path
and mode rules and their quoting (pure)."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import shlex
import subprocess
import time
from urllib.parse import quote

import pytest

from kernel.exceptions import InvalidInput
from kernel.names import remote_path_problem
from kernel.server.app import create_app
from kernel.server.components import components
from kernel.server.core import shell
from kernel.server.files import push as pushing
from kernel.server.files import storage
from kernel.server.models.files import Upload
from kernel.server.services import artifacts
from support.api import Api, make_token
from support.servers import app_config

from .conftest import add_agent_server

# -- pure: the path rule, modes, owners, quoting ---------------------------------------------
BAD_PATHS = [
    ("", "absolute"),
    ("etc/passwd", "absolute"),
    ("./x", "absolute"),
    ("/", "name a file"),
    ("/etc/", "name a file"),
    ("/etc/../shadow", "'..'"),
    ("/etc/./x", "'.'"),
    ("/etc//x", "empty parts"),
    ("/..", "'..'"),
    ("/tmp/a\x00b", "NUL"),
    ("/tmp/a\nb", "control"),
    ("/tmp/a\rb", "control"),
    ("/tmp/\x1b[31m", "control"),
    ("/tmp/\x7f", "control"),
    ("/tmp/\ud800", "Unicode"),
    ("/" + "a" * 256, "longer than 255"),
    ("/" + "/".join(["a" * 200] * 21), "at most 4095"),
]


@pytest.mark.parametrize(("path", "says"), BAD_PATHS)
def test_bad_paths_are_refused(path, says):
    problem = remote_path_problem(path)
    assert problem is not None and says in problem, problem
    with pytest.raises(InvalidInput):
        shell.remote_path(path)
    with pytest.raises(InvalidInput):
        shell.file_push(path, sha256="0" * 64, size=1)
    with pytest.raises(InvalidInput):
        shell.file_fetch(path, 10)


@pytest.mark.parametrize(
    "path",
    ["/etc/app.conf", "/tmp/with space", "/tmp/it's", '/tmp/"q"', "/tmp/$(reboot)",
     "/tmp/`id`", "/tmp/a;b|c&d", "/tmp/ünïcødé", "/tmp/-rf", "/tmp/*", "/..x/...", "/a"],
)  # fmt: skip
def test_odd_but_valid_paths_are_quoted(path, tmp_path):
    assert remote_path_problem(path) is None
    line = shell.file_fetch(path, 10)
    assignment = f"p={shlex.quote(path)};"
    assert line.startswith(assignment)
    # bash sees exactly the path: nothing in it runs.
    out = subprocess.run(["bash", "-c", assignment + ' printf %s "$p"'],
                         capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert out.stdout == path


@pytest.mark.parametrize(("mode", "want"), [("644", "0644"), ("0644", "0644"), ("4755", "4755"),
                                            ("0600", "0600"), ("000", "0000")])  # fmt: skip
def test_modes(mode, want):
    assert shell.file_mode(mode) == want


@pytest.mark.parametrize("mode", ["", "8", "0888", "12345", "rwx", "0o644", "+x", "644 ", 644])
def test_bad_modes(mode):
    with pytest.raises(InvalidInput, match="octal"):
        shell.file_mode(mode)


@pytest.mark.parametrize("owner", ["root", "www-data", "app:app", "1000:1000", "_svc", "a.b"])
def test_owners(owner):
    assert shell.file_owner(owner) == owner


@pytest.mark.parametrize("owner", ["", "root:", ":root", "a b", "$(id)", "-rf", "a:b:c", "x" * 40])
def test_bad_owners(owner):
    with pytest.raises(InvalidInput, match="USER"):
        shell.file_owner(owner)


def test_the_push_line_never_shows_the_url():
    line = shell.file_push("/etc/x", sha256="a" * 64, size=3, mode="600", owner="root:root")
    assert "$KERNEL_FILE_URL" in line and "http" not in line
    assert "chown -- root:root" in line and "chmod -- 0600" in line
    assert 'mv -f -T -- "$tmp" "$dest"' in line
    assert shlex.quote("/etc") in line
    with pytest.raises(ValueError, match="sha256"):
        shell.file_push("/etc/x", sha256="nothex", size=1)


# -- uploads --------------------------------------------------------------------------------
@pytest.fixture
def small(tmp_path, db_url):
    """An app whose caps are small: uploads up to 1000 bytes, fetches up to 100."""
    app = create_app(app_config(tmp_path, db_url, FILES_MAX_UPLOAD=1000, FILES_MAX_FETCH=100))
    yield app
    components(app).close()


@pytest.fixture
def op(small):
    return Api(small.test_client(), make_token(small, "op", "operator"))


def upload(api, data: bytes, name: str = "app.conf", expect: int = 201):
    r = api.call("POST", f"/api/v1/files?name={name}", expect, data=data,
                 content_type="application/octet-stream")  # fmt: skip
    return r.json()


def test_upload_list_show_delete(small, op, tmp_path):
    data = b"key = value\n" * 10
    up = upload(op, data)
    assert (up["size"], up["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert up["name"] == "app.conf" and up["created_by"] == "op"
    stored = tmp_path / "data" / "files" / up["id"]
    assert stored.read_bytes() == data
    assert not list(stored.parent.glob(".*.part"))
    listed = op.get("/api/v1/files")
    assert [f["id"] for f in listed["files"]] == [up["id"]]
    assert (listed["max_upload"], listed["max_fetch"]) == (1000, 100)
    assert op.get(f"/api/v1/files/{up['id']}")["sha256"] == up["sha256"]
    empty = upload(op, b"", name="")
    assert empty["size"] == 0
    op.delete(f"/api/v1/files/{up['id']}")
    assert not stored.exists()
    op.get(f"/api/v1/files/{up['id']}", expect=404)
    for bad in ("nope", "0" * 32, "../../kernel.db", "A" * 32):
        op.get(f"/api/v1/files/{bad}", expect=404)
    audit = Api(small.test_client(), make_token(small, "adm", "admin")).get("/api/v1/audit")
    assert {"file.upload", "file.delete"} <= {e["action"] for e in audit["entries"]}


def test_upload_caps(small, op, tmp_path):
    upload(op, b"x" * 1000)  # exactly the cap
    err = upload(op, b"x" * 1001, expect=413)
    assert err["error"] == "too_large"
    assert "more than the cap of 1000 bytes (1000 bytes, FILES_MAX_UPLOAD)" in err["message"]
    # A body without a length (chunked) is counted as it comes.
    r = op.call("POST", "/api/v1/files", 413, input_stream=io.BytesIO(b"y" * 1200),
                environ_overrides={"wsgi.input_terminated": True})  # fmt: skip
    assert "FILES_MAX_UPLOAD" in r.json()["message"]
    assert len(list((tmp_path / "data" / "files").iterdir())) == 1  # no part left behind
    Api(small.test_client(), make_token(small, "v", "viewer")).call(
        "POST", "/api/v1/files", 403, data=b"x"
    )


def test_expired_uploads_are_pruned(small, op, tmp_path):
    old = upload(op, b"old")
    with components(small).db.session() as s:
        s.get(Upload, old["id"]).expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    op.get(f"/api/v1/files/{old['id']}", expect=404)
    part = tmp_path / "data" / "files" / ".deadbeef.part"
    part.write_bytes(b"left by a crash")
    os.utime(part, (time.time() - 2 * storage.PART_MAX_AGE,) * 2)
    upload(op, b"new")
    assert not (tmp_path / "data" / "files" / old["id"]).exists() and not part.exists()
    assert [f["name"] for f in op.get("/api/v1/files")["files"]] == ["app.conf"]


def test_signed_download_urls(small, op):
    up = upload(op, b"the bytes")
    config = small.config
    client = small.test_client()
    url = pushing.download_url(config, up["id"], kernel_url="http://k")
    path = url.removeprefix("http://k")
    with client.get(path) as got:
        assert got.status_code == 200 and got.data == b"the bytes"
        assert got.headers["Cache-Control"] == "private, no-store"
    _, _, uid, expires, sig = path.split("/")
    for bad in (
        f"/file-downloads/{uid}/{expires}/{'0' * 64}",
        f"/file-downloads/{uid}/{int(expires) + 1}/{sig}",
        f"/file-downloads/{'1' * 32}/{expires}/{sig}",  # another upload
        f"/file-downloads/{uid}/{expires}/{sig}x",
    ):
        r = client.get(bad)
        assert (r.status_code, r.data[:13]) == (403, b"403 forbidden"), bad
    expired = pushing.download_url(config, up["id"], kernel_url="", now=time.time() - 7200)
    assert client.get(expired).data == b"403 forbidden: expired\n"
    # A service artifact's signature opens no upload (the scopes differ), and back.
    key = artifacts.signing_key(config)
    service_sig = artifacts.sign(key, uid, int(expires))
    assert client.get(f"/file-downloads/{uid}/{expires}/{service_sig}").status_code == 403
    assert client.get(f"/service-files/{uid}/{expires}/{sig}/x").status_code == 403
    op.delete(f"/api/v1/files/{up['id']}")
    assert client.get(path).status_code == 404


PUSH_ERRORS = [
    ({"path": "etc/x"}, "'path' must be absolute"),
    ({"path": "/etc/../x"}, "'path' must not have '.', '..' or empty parts"),
    ({"path": "/etc/x\x00"}, "'path' must not contain NUL"),
    ({"path": "/tmp/"}, "'path' must name a file"),
    ({"path": "/" + "a" * 5000}, "'path' must have at most 4095 characters"),
    ({"path": 5}, "'path' must be a string"),
    ({"mode": "999"}, "'mode' must be an octal mode"),
    ({"mode": 644}, "'mode' must be a string"),
    ({"owner": "$(id)"}, "'owner' must be USER or USER:GROUP"),
    ({"timeout": 0}, "'timeout' must be greater than or equal to 1"),
    ({"targets": {}}, "choose targets"),
    ({"targets": {"servers": ["ghost"]}}, "no such server(s): ghost"),
]


def test_push_refusals(small, op):
    up = upload(op, b"x")
    for change, says in PUSH_ERRORS:
        body = {"targets": {"all": True}, "path": "/tmp/x", **change}
        err = op.post(f"/api/v1/files/{up['id']}/push", body, expect=400)
        assert says in err["message"], (change, err)
    op.post(f"/api/v1/files/{'0' * 32}/push", {"targets": {"all": True}, "path": "/x"}, expect=404)
    for raw in (b"\xff", b"[" * 3000, b'{"path": "\\udc00"}', b""):
        r = op.call("POST", f"/api/v1/files/{up['id']}/push", data=raw,
                    content_type="application/json")  # fmt: skip
        assert r.status_code == 400, raw


# -- fetching from a real agent (loopback: it reads files of this test's tmp dir) ------------
def test_fetch(small, op, agents, tmp_path):
    (a,) = agents(1)
    adm = Api(small.test_client(), make_token(small, "adm", "admin"))
    add_agent_server(adm, a, "alpha")
    data = bytes(range(0, 256, 4)) + b"\x00\xffbinary\n"
    f = tmp_path / "fetch me.bin"
    f.write_bytes(data)
    got = op.call("GET", f"/api/v1/files/fetch?server=alpha&path={quote(str(f))}", 200)
    assert got.data == data
    assert got.headers["X-Kernel-SHA256"] == hashlib.sha256(data).hexdigest()
    assert got.headers["Content-Disposition"] == "attachment; filename*=UTF-8''fetch%20me.bin"
    exact = tmp_path / "exact"
    exact.write_bytes(b"e" * 100)
    assert op.call("GET", f"/api/v1/files/fetch?server=alpha&path={exact}", 200).data == b"e" * 100

    big = tmp_path / "big"
    big.write_bytes(b"b" * 101)
    err = op.call("GET", f"/api/v1/files/fetch?server=alpha&path={big}", 413).json()
    assert err["error"] == "too_large"
    assert err["message"] == (
        f"alpha: {big} is 101 bytes, more than the cap of 100 bytes (FILES_MAX_FETCH, 100 bytes)"
    )
    err = op.call("GET", f"/api/v1/files/fetch?server=alpha&path={tmp_path}/none", 404).json()
    assert err["message"] == f"alpha: no such file on this host: {tmp_path}/none"
    err = op.call("GET", f"/api/v1/files/fetch?server=alpha&path={tmp_path}", 400).json()
    assert err["message"] == f"alpha: not a regular file: {tmp_path}"
    err = op.call("GET", "/api/v1/files/fetch?server=ghost&path=/etc/hosts", 404).json()
    assert err["message"] == "no server named 'ghost'"
    for bad in ("etc/hosts", "/etc/../etc/hosts", "/etc/hosts%00", "/tmp/%0a"):
        op.call("GET", f"/api/v1/files/fetch?server=alpha&path={bad}", 400)
    viewer = Api(small.test_client(), make_token(small, "v", "viewer"))
    viewer.call("GET", f"/api/v1/files/fetch?server=alpha&path={quote(str(f))}", 403)
    fetched = [e for e in adm.get("/api/v1/audit")["entries"] if e["action"] == "file.fetch"]
    assert fetched[-1]["hosts"] == ["alpha"] and fetched[-1]["detail"]["path"] == str(f)
    a.stop()
    err = op.call("GET", f"/api/v1/files/fetch?server=alpha&path={quote(str(f))}", 502).json()
    assert err["message"].startswith("alpha did not answer:")


def test_a_file_the_agent_cannot_fit(tmp_path, db_url, agent_factory):
    """The agent's own output cap below what base64 of the file needs: a clear 413."""
    app = create_app(app_config(tmp_path, db_url, FILES_MAX_FETCH=100000))
    try:
        a = agent_factory("--max-output-bytes", "1024")
        api = Api(app.test_client(), make_token(app, "adm", "admin"))
        add_agent_server(api, a, "alpha")
        f = tmp_path / "f"
        f.write_bytes(b"z" * 5000)
        err = api.call("GET", f"/api/v1/files/fetch?server=alpha&path={f}", 413).json()
        assert "max_output_bytes" in err["message"]
    finally:
        components(app).close()


def test_storage_writes_in_chunks_and_cleans_up(tmp_path):
    class Stream:
        def __init__(self):
            self.reads = 0

        def read(self, n):
            self.reads += 1
            assert n == storage.CHUNK
            return b"c" * n if self.reads <= 3 else b""

    got = storage.receive(Stream(), tmp_path, cap=10 * storage.CHUNK, length=None)
    assert got.size == 3 * storage.CHUNK
    assert (tmp_path / "files" / got.id).stat().st_size == got.size
    with pytest.raises(InvalidInput, match="ended after"):
        storage.receive(Stream(), tmp_path, cap=10 * storage.CHUNK, length=5 * storage.CHUNK)
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == [got.id]
