"""Files end to end on full test hosts (systemd, the agent installed by install.sh) and a
real server process on the testbed's gateway: pushes with owner and mode, checked by SHA-256
on the hosts, written atomically (a watcher on the host never sees a part of the file, and a
failed download leaves the old file and no temporary one), per-host failures, fetches, the
size caps, and a 128 MiB upload that stays out of the server's memory."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.servers import ServerProc

pytestmark = [pytest.mark.testbed, pytest.mark.slow]
FETCH_CAP = 1024 * 1024


@pytest.fixture(scope="module")
def bed(full_hosts):
    return full_hosts(2)


@pytest.fixture(scope="module")
def server(bed, tmp_path_factory):
    data = tmp_path_factory.mktemp("files-server")
    srv = ServerProc(
        data,
        host=bed.gateway_ip,
        KERNEL_AGENT_NETWORKS=str(bed.record.network),
        KERNEL_FILES_MAX_FETCH=str(FETCH_CAP),
    )
    srv.start()
    try:
        srv.login()
        with srv.api() as api:
            for h in bed.hosts:
                body = {"name": h.name, "agent_url": h.agent_url, "agent_key": h.key,
                        "tags": ["e2e"]}  # fmt: skip
                r = api.post("/api/v1/servers", json=body)
                assert r.status_code == 201, r.text
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def api(server):
    with server.api() as client:
        yield client


def upload(api: httpx.Client, data: Any, name: str = "app.conf") -> dict[str, Any]:
    r = api.post("/api/v1/files", params={"name": name}, content=data,
                 headers={"Content-Type": "application/octet-stream"}, timeout=300)  # fmt: skip
    assert r.status_code == 201, r.text
    return r.json()


def push(api: httpx.Client, upload_id: str, **body: Any) -> dict[str, Any]:
    body.setdefault("targets", {"tags": ["e2e"]})
    r = api.post(f"/api/v1/files/{upload_id}/push", json=body)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    deadline = time.monotonic() + 120
    while True:
        job = api.get(f"/api/v1/jobs/{job_id}?output=1").json()
        if job["state"] in ("finished", "cancelled"):
            return job  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def test_push_to_many_with_owner_and_mode(bed, api):
    data = b"listen = 8080\n\x00binary too\n"
    up = upload(api, data)
    for h in bed.hosts:
        h.run("id kapp >/dev/null 2>&1 || useradd -M kapp; mkdir -p /etc/kernel-e2e")
    job = push(api, up["id"], path="/etc/kernel-e2e/app.conf", mode="640", owner="kapp:kapp")
    assert job["kind"] == "file" and job["meta"]["sha256"] == up["sha256"]
    assert job["env"] == ["KERNEL_FILE_URL"]  # the signed URL is not shown
    assert "http" not in job["cmd"]
    for run in job["runs"]:
        assert run["state"] == "ok", run
        assert f"kernel: wrote /etc/kernel-e2e/app.conf ({len(data)} bytes" in run["stdout"]
        assert "mode 0640, owner kapp:kapp" in run["stdout"]
    for h in bed.hosts:
        out = h.run("stat -c '%a %U %G %s' /etc/kernel-e2e/app.conf; "
                    "sha256sum /etc/kernel-e2e/app.conf").stdout  # fmt: skip
        assert out.splitlines()[0] == f"640 kapp kapp {len(data)}"
        assert out.splitlines()[1].startswith(up["sha256"])
        assert h.run("ls -A /etc/kernel-e2e").stdout == "app.conf\n"  # no temporary left
    # Again, without an owner: root's, mode 0644 by default; the old file is replaced.
    job = push(api, upload(api, b"v2\n")["id"], path="/etc/kernel-e2e/app.conf")
    assert {r["state"] for r in job["runs"]} == {"ok"}
    for h in bed.hosts:
        assert h.run("stat -c '%a %U' /etc/kernel-e2e/app.conf").stdout == "644 root\n"
        assert h.run("cat /etc/kernel-e2e/app.conf").stdout == "v2\n"


def test_a_missing_directory_fails_on_that_host_only(bed, api):
    first, second = bed.hosts
    first.run("mkdir -p /srv/only-first")
    second.run("rm -rf /srv/only-first")
    job = push(api, upload(api, b"x")["id"], path="/srv/only-first/x.txt")
    runs = {r["server"]: r for r in job["runs"]}
    assert runs[first.name]["state"] == "ok"
    failed = runs[second.name]
    assert (failed["state"], failed["exit_code"]) == ("failed", 96)
    assert failed["stderr"] == "kernel: directory /srv/only-first does not exist on this host\n"
    job = push(api, upload(api, b"x")["id"], path="/etc", targets={"servers": [first.name]})
    assert job["runs"][0]["exit_code"] == 96
    assert job["runs"][0]["stderr"] == "kernel: /etc is a directory on this host\n"
    r = api.post(f"/api/v1/files/{upload(api, b'x')['id']}/push",
                 json={"targets": {"all": True}, "path": "/srv/../etc/passwd"})  # fmt: skip
    assert r.status_code == 400 and "'..'" in r.json()["message"]


WATCH = r"""
d=/srv/atomic; f=$d/data.bin; : > $d/seen
while [ ! -e $d/stop ]; do
  s=$(stat -c %s "$f" 2>/dev/null || echo none)
  t=$(ls -A "$d" | grep -c '^\.kernel-push-')
  echo "$s $t" >> $d/seen
done
"""


def test_the_file_is_replaced_atomically(bed, api):
    """A watcher on the host stats the file while a 48 MiB push replaces it: it sees the old
    size or the new one, never a part — while the temporary file is there beside it."""
    h = bed.hosts[0]
    h.run("rm -rf /srv/atomic; mkdir -p /srv/atomic; head -c 1000 /dev/zero > /srv/atomic/data.bin")
    new = os.urandom(48 * 1024 * 1024)
    up = upload(api, new, name="data.bin")
    watcher = threading.Thread(target=lambda: h.run(WATCH, timeout=300))
    watcher.start()
    try:
        deadline = time.monotonic() + 10
        while h.run("test -s /srv/atomic/seen").returncode != 0:
            assert time.monotonic() < deadline
        job = push(api, up["id"], path="/srv/atomic/data.bin", targets={"servers": [h.name]})
        assert job["runs"][0]["state"] == "ok", job["runs"][0]
    finally:
        h.run("touch /srv/atomic/stop")
        watcher.join(60)
    seen = [line.split() for line in h.run("cat /srv/atomic/seen").stdout.splitlines()]
    sizes = {s for s, _ in seen}
    assert sizes <= {"1000", str(len(new))}, sizes - {"1000", str(len(new))}
    assert any(t != "0" and s == "1000" for s, t in seen), "the watcher saw no download going on"
    assert seen[-1] == [str(len(new)), "0"]
    assert h.run("sha256sum /srv/atomic/data.bin").stdout.startswith(up["sha256"])


def test_a_failed_download_leaves_the_old_file(bed, api):
    """The directory's filesystem is too small for the new file: the push fails on that host
    (exit 95), the old file is as it was, and no temporary file is left."""
    h = bed.hosts[0]
    h.run("umount /srv/tiny 2>/dev/null; mkdir -p /srv/tiny && "
          "mount -t tmpfs -o size=1m tmpfs /srv/tiny && echo old > /srv/tiny/conf")  # fmt: skip
    try:
        job = push(api, upload(api, b"n" * (2 * 1024 * 1024))["id"], path="/srv/tiny/conf",
                   targets={"servers": [h.name]})  # fmt: skip
        run = job["runs"][0]
        assert (run["state"], run["exit_code"]) == ("failed", 95), run
        assert "kernel: the download from Kernel failed" in run["stderr"]
        assert h.run("cat /srv/tiny/conf").stdout == "old\n"
        assert h.run("ls -A /srv/tiny").stdout == "conf\n"
    finally:
        h.run("umount /srv/tiny")


def test_fetch(bed, api):
    h = bed.hosts[1]
    h.run("head -c 300000 /dev/urandom > /root/blob; printf 'x%.0s' $(seq 1 10) > /root/small")
    want = h.run("sha256sum /root/blob").stdout.split()[0]
    r = api.get("/api/v1/files/fetch", params={"server": h.name, "path": "/root/blob"})
    assert r.status_code == 200 and len(r.content) == 300000
    assert hashlib.sha256(r.content).hexdigest() == want == r.headers["X-Kernel-SHA256"]
    h.run(f"head -c {FETCH_CAP + 1} /dev/zero > /root/big")
    r = api.get("/api/v1/files/fetch", params={"server": h.name, "path": "/root/big"})
    assert r.status_code == 413
    assert r.json()["message"] == (
        f"{h.name}: /root/big is {FETCH_CAP + 1} bytes, more than the cap of {FETCH_CAP} bytes "
        "(FILES_MAX_FETCH, 1 MiB)"
    )
    r = api.get("/api/v1/files/fetch", params={"server": h.name, "path": "/root/nope"})
    assert r.status_code == 404 and r.json()["message"].endswith(
        "no such file on this host: /root/nope"
    )
    r = api.get("/api/v1/files/fetch", params={"server": h.name, "path": "/dev/null"})
    assert r.status_code == 400 and "not a regular file" in r.json()["message"]


def _memory(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def test_a_large_upload_stays_out_of_memory(bed, server, api, tmp_path):
    """128 MiB in and out: the server's peak RSS grows by far less than the file."""
    size = 128 * 1024 * 1024
    src = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with open(src, "wb") as f:
        block = os.urandom(1024 * 1024)
        for i in range(128):
            chunk = block[i:] + block[:i]
            digest.update(chunk)
            f.write(chunk)
    assert server.proc is not None
    before = _memory(server.proc.pid)
    with open(src, "rb") as f:
        up = upload(api, f, name="big.bin")
    after = _memory(server.proc.pid)
    grew = after["VmHWM"] - before["VmHWM"]
    print(f"server RSS {before['VmRSS'] >> 20} → {after['VmRSS'] >> 20} MiB, peak "
          f"{before['VmHWM'] >> 20} → {after['VmHWM'] >> 20} MiB for a 128 MiB upload")  # fmt: skip
    assert grew < 32 * 1024 * 1024, (before, after)
    assert (up["size"], up["sha256"]) == (size, digest.hexdigest())
    h = bed.hosts[0]
    job = push(api, up["id"], path="/root/big.bin", targets={"servers": [h.name]})
    assert job["runs"][0]["state"] == "ok", job["runs"][0]
    assert h.run("sha256sum /root/big.bin").stdout.startswith(up["sha256"])
    assert _memory(server.proc.pid)["VmHWM"] - before["VmHWM"] < 48 * 1024 * 1024


def test_the_caps_on_the_wire(server, api):
    """An upload declared over FILES_MAX_UPLOAD is refused before a byte of it is sent, with
    the API's JSON error; other routes keep MAX_CONTENT_LENGTH (16 MiB) however large uploads
    may be."""
    host, port = server.url.removeprefix("http://").split(":")
    for path, length in (("/api/v1/files", 1024**3 + 1), ("/api/v1/jobs", 16 * 1024**2 + 1)):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            head = (
                f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {server.token}\r\n"
                f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
            )
            s.sendall(head.encode())
            answer = s.recv(65536).decode()
        assert answer.startswith("HTTP/1.1 413 "), answer
        if path == "/api/v1/files":
            assert '"error": "too_large"' in answer
            assert (
                "the upload is 1073741825 bytes: more than the cap of 1 GiB (1073741824 " in answer
            )
    assert api.get("/healthz").text == "ok\n"
