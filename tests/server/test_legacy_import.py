"""``kernel-server import-legacy``: the original's machine list read safely, its folders
copied and judged, dry runs and second runs that change nothing, one-line errors.
(On full test hosts with the Go agent replaced: test_legacy_e2e.py.)"""

from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from kernel.exceptions import InvalidInput
from kernel.server.app import create_app
from kernel.server.components import components
from kernel.server.inventory import legacy as machines
from kernel.server.models.servers import InitRecord, Server
from kernel.server.services import legacy as folders
from support.legacy import OLD_SERVER, machine_list, make_checkout, stand_in_mod_kernel
from support.servers import KERNEL_SERVER, app_config

URL = "http://kernel.test:8002"


# -- the pickle ----------------------------------------------------------------------------------
class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_protocol_of_the_original_reads(protocol: int) -> None:
    got = machines.load_machine_list(
        machine_list({"web1": "http://10.0.0.5:8001", "db": "http://10.0.0.6:8001"}, protocol)
    )
    assert {k: v.state["url"] for k, v in got.items()} == {  # type: ignore[attr-defined]
        "web1": "http://10.0.0.5:8001",
        "db": "http://10.0.0.6:8001",
    }
    web1 = got["web1"]
    assert isinstance(web1, machines.LegacyMachine)
    assert web1.state["service_enabled"] == {"legacy-web": "unknown"}


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_a_malicious_pickle_runs_nothing(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    with stand_in_mod_kernel() as machine:
        hidden = machine("http://10.0.0.5:8001")
        hidden.url = Evil(marker)  # inside a Machine's state, too
        for payload in (Evil(marker), {"web1": Evil(marker)}, {"web1": hidden}):
            data = pickle.dumps(payload, protocol=protocol)
            with pytest.raises(InvalidInput) as e:
                machines.load_machine_list(data)
            assert "asks for posix.system" in e.value.message
            assert "nothing in it was run" in e.value.message
    # and other ways in: builtins, the extension registry, persistent ids
    for data in (
        b"cbuiltins\neval\n(S'1'\ntR.",
        b"c__builtin__\ngetattr\n.",
        b"\x80\x02\x82\x01.",  # EXT1
        b"P0\n.",  # a persistent id
    ):
        with pytest.raises(InvalidInput):
            machines.load_machine_list(data)
    assert not marker.exists()


@pytest.mark.parametrize(
    "data, needle",
    [
        (b"", "not a readable pickle (EOFError"),
        (b"garbage", "not a readable pickle"),
        (b"\x80\x04\x95" + b"\xff" * 20, "not a readable pickle"),
        (pickle.dumps([1, 2]), "holds a list, not the original's {name: Machine} dict"),
        (pickle.dumps("x"), "holds text"),
        (pickle.dumps({"a": 1})[:-3], "not a readable pickle"),
        (os.urandom(4096), "machine_list.txt"),
        (b"(" * 100000 + b".", "not a readable pickle"),
    ],
)
def test_a_damaged_pickle_is_one_line(data: bytes, needle: str) -> None:
    with pytest.raises(InvalidInput) as e:
        machines.load_machine_list(data)
    assert needle in e.value.message and "\n" not in e.value.message


def test_machines_that_cannot_be_imported_are_said_so() -> None:
    with stand_in_mod_kernel() as machine:
        data = pickle.dumps(
            {
                "web1": machine("http://10.0.0.5:8001"),
                "WEB1.": machine("http://10.0.0.9:8001"),
                "服务器": machine("http://10.0.0.6:8001"),
                "bad\x1b[31mname": machine("http://10.0.0.7:8001"),
                ("a", "tuple"): machine("http://x"),
                "plain": {"url": "http://10.0.0.8:8001"},
                "proxied": machine("https://agent.example.org"),
                "nourl": machine(42),
                "lone\udcff": machine("\udcff"),
            }
        )
    plans = {p.name: p for p in machines.plan(None, machines.load_machine_list(data))}
    assert plans["web1"].action == "add" and plans["web1"].notes == []
    assert plans["WEB1."].action == "skip" and "'web1'" in plans["WEB1."].reason
    assert plans["服务器"].action == "skip" and "kernel enroll NEW-NAME" in plans["服务器"].reason
    assert plans["bad\\x1b[31mname"].action == "skip"  # shown escaped, never raw
    assert plans["('a', 'tuple')"].action == "skip"
    assert plans["plain"].action == "skip" and "not a Machine" in plans["plain"].reason
    assert plans["proxied"].action == "add" and "port 443" in plans["proxied"].notes[0]
    assert plans["nourl"].action == "add" and "not text" in plans["nourl"].notes[0]
    assert plans["lone\\udcff"].action == "skip"


# -- hard-coded URLs -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "line, replacement, note",
    [
        (
            f"wget {OLD_SERVER}/static/service/web/web.tgz",
            'wget "$KERNEL_SERVICE_URL/web.tgz"',
            "",
        ),
        (
            f"curl -sL '{OLD_SERVER}/static/service/web/bin/x' -o /usr/bin/x",
            'curl -sL "$KERNEL_SERVICE_URL/bin/x" -o /usr/bin/x',
            "bin/x is not in the service folder",
        ),
        (
            'curl -s "http://10.1.1.1:8002/static/service/other/a.tgz" | tar xz',
            'curl -s "$KERNEL_URL/static/service/other/a.tgz" | tar xz',
            "PUBLIC_ARTIFACTS = true",
        ),
        (f"curl {OLD_SERVER}/api/thing", "", "downloads from the original server"),
        (
            f"BASE={OLD_SERVER}/static/service/web/; wget $BASE/web.tgz",
            'BASE="$KERNEL_SERVICE_URL"; wget $BASE/web.tgz',
            "",
        ),
    ],
)
def test_hints_for_a_service(line: str, replacement: str, note: str) -> None:
    (hint,) = folders.hints(
        "deploy.sh", f"#!/bin/bash\n{line}\n", service="web", artifacts={"web.tgz"},
        old=OLD_SERVER + "/static",
    )  # fmt: skip
    assert (hint.script, hint.line_no, hint.line) == ("deploy.sh", 2, line)
    assert hint.replacement == replacement
    assert note in hint.note


def test_hints_leave_other_lines_alone() -> None:
    text = (
        f"# wget {OLD_SERVER}/static/service/web/web.tgz\n"
        "curl -sL https://github.com/x/y/releases/z.tgz\n"
        "echo done\n"
    )
    assert folders.hints("deploy.sh", text, service="web", artifacts=set(), old=None) == []
    (hint,) = folders.hints(
        "01-init.sh", f"curl -sL {OLD_SERVER}/static/init/tools.tar | tar x\n", service=None,
        artifacts=set(), old=None,
    )  # fmt: skip
    assert hint.replacement == 'curl -sL "$KERNEL_URL/static/init/tools.tar" | tar x'
    assert "PUBLIC_ARTIFACTS" in hint.note


# -- the command ---------------------------------------------------------------------------------
def cli(
    data: Path, db_url: str, *args: str, url: str | None = URL, **more: str
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "KERNEL_DATA_DIR": str(data),
        "KERNEL_DATABASE_URL": db_url,
        **more,
    }
    env.pop("KERNEL_URL", None)
    if url:
        env["KERNEL_URL"] = url
    return subprocess.run(
        [str(KERNEL_SERVER), "import-legacy", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith("kernel.db")
    }


def servers_of(tmp_path: Path, db_url: str) -> list[dict[str, Any]]:
    """Each server as the API shows it, with its key and init records."""
    app = create_app(app_config(tmp_path, db_url))
    try:
        with components(app).db.reading() as s:
            rows = s.scalars(select(Server).order_by(Server.name)).all()
            return [
                {
                    **r.to_json(),
                    "key": r.agent_key,
                    "init": [
                        (i.script, i.state, i.job_id)
                        for i in s.scalars(select(InitRecord).where(InitRecord.server_id == r.id))
                    ],
                }
                for r in rows
            ]
    finally:
        components(app).close()


def test_import_dry_run_and_again(tmp_path: Path, db_url: str) -> None:
    checkout = make_checkout(
        tmp_path / "kernel-server",
        {"web1": "http://10.0.0.5:8001", "db1": "http://10.0.0.6:8001", "服务器": "http://x"},
    )
    data = tmp_path / "data"  # app_config's data dir: servers_of reads the same

    # A dry run on a data dir never used creates nothing.
    r = cli(data, db_url, str(checkout), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert not data.exists()
    out = r.stdout
    assert "dry run: nothing is changed" in out
    assert "+ web1 (http://10.0.0.5:8001): would be added as a pending server" in out
    assert "! 服务器 (http://x): not imported: the name is not allowed" in out
    assert "+ legacy-web: would be copied" in out
    assert "accepted by the catalogue (unit legacy-web.service)" in out
    assert "remove.sh is missing" in out  # the half service, rejected
    assert f"wget -q {OLD_SERVER}/static/service/legacy-web/legacy-web.tgz" in out
    assert 'wget -q "$KERNEL_SERVICE_URL/legacy-web.tgz"' in out
    assert "'notes.txt' is not run" in out
    assert "Dry run: 2 servers would be added and 4 folders or scripts copied" in out

    # The import.
    r = cli(data, db_url, str(checkout))
    assert r.returncode == 0, r.stderr
    commands = [line.strip() for line in r.stdout.splitlines() if "curl -fsSL" in line]
    assert len(commands) == 2
    assert all(c.startswith(f"curl -fsSL '{URL}/agent/install.sh?token=ke_") for c in commands)
    assert "stops and disables the Go agent's service" in r.stdout
    assert "Done: 2 servers added, 4 folders or scripts copied; 2 left out" in r.stdout
    assert sorted(os.listdir(data / "service")) == ["half", "legacy-web"]
    assert sorted(os.listdir(data / "init")) == ["01-first.sh", "02-second.sh"]
    assert (data / "service/legacy-web/legacy-web.tgz").read_bytes() == (
        checkout / "static/service/legacy-web/legacy-web.tgz"
    ).read_bytes()
    got = {s["name"]: s for s in servers_of(tmp_path, db_url)}
    assert sorted(got) == ["db1", "web1"]
    assert got["web1"]["state"] == "pending" and got["web1"]["tags"] == ["legacy"]
    assert "http://10.0.0.5:8001" in got["web1"]["description"]
    # The original ran its init scripts on its machines: joining Kernel does not run them again.
    assert got["web1"]["init"] == [("01-first.sh", "ok", None), ("02-second.sh", "ok", None)]
    assert "The original's init scripts count as run on them" in r.stdout

    # Again, and a dry run: nothing changes, and it says so.
    files = snapshot(data)
    r = cli(data, db_url, str(checkout))
    assert r.returncode == 0, r.stderr
    assert "Nothing changed: everything was imported before" in r.stdout
    assert "= web1 (http://10.0.0.5:8001): imported before, not joined yet" in r.stdout
    assert "= legacy-web: imported before" in r.stdout and "curl -fsSL" not in r.stdout
    r = cli(data, db_url, str(checkout), "--dry-run")
    assert "Dry run: nothing to do, everything was imported before" in r.stdout
    assert snapshot(data) == files
    assert {s["name"]: s for s in servers_of(tmp_path, db_url)} == got

    # A folder changed in the data dir is never overwritten.
    (data / "service/legacy-web/deploy.sh").write_text("#!/bin/bash\necho mine\n")
    r = cli(data, db_url, str(checkout))
    assert "! legacy-web: not copied:" in r.stdout and "differs" in r.stdout
    assert (data / "service/legacy-web/deploy.sh").read_text() == "#!/bin/bash\necho mine\n"


def test_kernels_examples_are_named_in_a_conflict(tmp_path: Path, db_url: str) -> None:
    checkout = make_checkout(tmp_path / "old", {})
    sums = checkout / "static/service/sums"
    sums.mkdir()
    (sums / "info.json").write_text('{"description": "the original sums"}')
    data = tmp_path / "data"
    app = create_app(app_config(tmp_path, db_url, INSTALL_EXAMPLES=True))  # examples copied
    components(app).close()
    assert (data / "init" / "10-motd.sh").exists()
    r = cli(data, db_url, str(checkout))
    assert r.returncode == 0, r.stderr
    assert "it is Kernel's example: remove it to import yours" in r.stdout
    assert "not the original's; they run on joining servers too): 10-motd.sh" in r.stdout


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_text("x"), "is not a folder"),
        (lambda p: p.mkdir(), "is not a checkout of the original kernel-server"),
        (
            lambda p: (p.mkdir(), (p / "machine_list.txt").write_bytes(b"\x80\x03junk")),
            "machine_list.txt is not a readable pickle",
        ),
        (lambda p: (p.mkdir(), (p / "machine_list.txt").mkdir()), "is not a file"),
        (
            lambda p: (p.mkdir(), (p / "machine_list.txt").write_bytes(b"\xff\xfe\x00")),
            "machine_list.txt",
        ),
    ],
)
def test_one_line_errors(tmp_path: Path, db_url: str, make: Any, needle: str) -> None:
    target = tmp_path / "old"
    make(target)
    r = cli(tmp_path / "data", db_url, str(target))
    assert r.returncode == 1
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists()


def test_a_malicious_machine_list_stops_the_import(tmp_path: Path, db_url: str) -> None:
    checkout = make_checkout(tmp_path / "old", {})
    marker = tmp_path / "pwned"
    (checkout / "machine_list.txt").write_bytes(pickle.dumps({"web1": Evil(marker)}))
    r = cli(tmp_path / "data", db_url, str(checkout))
    assert r.returncode == 1 and "asks for posix.system" in r.stderr
    assert "Traceback" not in r.stderr
    assert not marker.exists() and not (tmp_path / "data").exists()


def test_servers_need_an_address_for_their_commands(tmp_path: Path, db_url: str) -> None:
    checkout = make_checkout(tmp_path / "old", {"web1": "http://10.0.0.5:8001"})
    for bad in (
        "ftp://x",
        "nonsense",
        "http://x:99999",
        "http://\udcff/",
        "http://a b/",
        "http://\x1b/",
    ):
        r = cli(tmp_path / "data", db_url, str(checkout), "--url", bad, url=None)
        assert r.returncode == 1 and "--url" in r.stderr and "Traceback" not in r.stderr
        assert "\x1b" not in r.stderr and not (tmp_path / "data").exists()
    r = cli(tmp_path / "data", db_url, str(checkout), url=None)
    assert r.returncode == 1 and "set URL (KERNEL_URL) or pass --url" in r.stderr
    assert not (tmp_path / "data/service").exists()
    r = cli(tmp_path / "data", db_url, str(checkout), "--url", "http://10.9.9.9:8002/")
    assert r.returncode == 0, r.stderr
    assert "curl -fsSL 'http://10.9.9.9:8002/agent/install.sh?token=" in r.stdout


def test_scripts_that_are_not_text(tmp_path: Path, db_url: str) -> None:
    checkout = make_checkout(tmp_path / "old", {})
    (checkout / "static/service/legacy-web/deploy.sh").write_bytes(b"wget \xff\xfe\n")
    (checkout / "static/init/03-bad.sh").write_bytes(b"echo \xed\xa0\x80\n")
    (checkout / "static/service/a b").mkdir()
    r = cli(tmp_path / "data", db_url, str(checkout))
    assert r.returncode == 0, r.stderr
    assert "deploy.sh is not valid UTF-8" in r.stdout
    assert "03-bad.sh is not valid UTF-8" in r.stdout
    assert "! a b: not imported: its name is not allowed" in r.stdout
    assert not (tmp_path / "data/init/03-bad.sh").exists()


def test_run_init_leaves_them_to_run_on_join(tmp_path: Path, db_url: str) -> None:
    checkout = make_checkout(tmp_path / "old", {"web1": "http://10.0.0.5:8001"})
    r = cli(tmp_path / "data", db_url, str(checkout), "--run-init")
    assert r.returncode == 0, r.stderr
    assert "count as run" not in r.stdout
    (web1,) = servers_of(tmp_path, db_url)
    assert web1["init"] == []


def test_a_path_that_is_not_text_is_shown_escaped(tmp_path: Path, db_url: str) -> None:
    r = cli(tmp_path / "data", db_url, str(tmp_path / "\udcff\x1b[31mold"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "\\udcff\\x1b[31mold does not exist" in r.stderr and "\x1b" not in r.stderr
    checkout = make_checkout(tmp_path / "\udcffcheckout", {})
    r = cli(tmp_path / "data", db_url, str(checkout), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "from " + str(tmp_path) + "/\\udcffcheckout" in r.stdout


@pytest.mark.parametrize(
    "args, env, needle",
    [
        ([], {}, "Missing argument 'DIR'"),
        (["--token-ttl", "abc"], {}, "Invalid value for '--token-ttl'"),
        (["--token-ttl", "5"], {}, "Invalid value for '--token-ttl'"),
        ([], {"KERNEL_DATABASE_URL": "foo://x"}, "cannot use the database"),
        ([], {"KERNEL_THREADS": "abc"}, "KERNEL_THREADS"),
    ],
)
def test_garbage_on_the_command_line(
    tmp_path: Path, db_url: str, args: list[str], env: dict[str, str], needle: str
) -> None:
    checkout = [] if needle.startswith("Missing") else [str(make_checkout(tmp_path / "old", {}))]
    r = cli(tmp_path / "data", db_url, *args, *checkout, **env)
    assert r.returncode != 0 and needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
