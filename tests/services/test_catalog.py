"""catalog.py: scanning service/<name>/ and init/NN-name.sh, with exact problem messages."""

import hashlib
import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kernel.exceptions import InvalidName
from kernel.server.core import files
from kernel.server.core.datadir import install_examples
from kernel.server.inventory import initscripts
from kernel.server.inventory.initscripts import order_init_names, scan_init
from kernel.server.services import catalog
from kernel.server.services.catalog import scan


def make_service(root, name, info=None, deploy="echo deploy\n", remove="echo remove\n", files=()):
    d = root / name
    d.mkdir(parents=True)
    if info is not None:
        (d / "info.json").write_text(info if isinstance(info, str) else json.dumps(info))
    if deploy is not None:
        (d / "deploy.sh").write_text(deploy)
    if remove is not None:
        (d / "remove.sh").write_text(remove)
    for rel, data in dict(files).items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    return d


def only(cat):
    assert len(cat) == 1
    return next(iter(cat))


def test_a_good_service(tmp_path):
    make_service(
        tmp_path,
        "sums",
        {"description": "Sums", "display_name": "Sums!"},
        files={"sums.tgz": b"x" * 10, "web/index.html": b"<p>"},
    )
    s = only(scan(tmp_path))
    assert s.deployable and s.problems == ()
    assert (s.name, s.description, s.display_name, s.unit, s.title) == (
        "sums",
        "Sums",
        "Sums!",
        "sums.service",
        "Sums!",
    )
    assert s.script("deploy.sh").text == "echo deploy\n"
    assert s.script("deploy.sh").sha256 == hashlib.sha256(b"echo deploy\n").hexdigest()
    assert [(a.path, a.size) for a in s.artifacts] == [("sums.tgz", 10), ("web/index.html", 3)]


def test_unit_and_defaults(tmp_path):
    make_service(tmp_path, "a", {"description": "d", "unit": "a-daemon"})
    make_service(tmp_path, "b", {"description": "d", "unit": "b.timer"})
    make_service(tmp_path, "c", {"description": "d", "extra": [1, 2]})  # unknown keys ignored
    cat = scan(tmp_path)
    assert [s.unit for s in cat] == ["a-daemon.service", "b.timer", "c.service"]
    assert cat.units == ["a-daemon.service", "b.timer", "c.service"]
    assert cat.get("b").title == "b" and cat.get("nope") is None
    assert all(s.deployable for s in cat)


@pytest.mark.parametrize(
    ("info", "problem"),
    [
        (None, "info.json is missing"),
        ("{", "info.json is not valid JSON: Expecting property name enclosed in double quotes"),
        ("[1]", "info.json must hold a JSON object, not a list"),
        ('"x"', "info.json must hold a JSON object, not a string"),
        ("null", "info.json must hold a JSON object, not null"),
        ("{}", 'info.json: "description" is required'),
        ('{"description": 5}', 'info.json: "description" must be a non-empty string'),
        ('{"description": "  "}', 'info.json: "description" must be a non-empty string'),
        ('{"description": "d", "unit": 5}', 'info.json: "unit" must be a string, not a number'),
        (
            '{"description": "d", "unit": "x; reboot"}',
            "info.json: unit name 'x; reboot' is not allowed",
        ),
        (
            '{"description": "d", "display_name": ["x"]}',
            'info.json: "display_name" must be a string, not a list',
        ),
    ],
)
def test_bad_info_json(tmp_path, info, problem):
    make_service(tmp_path, "svc", info)
    s = only(scan(tmp_path))
    assert not s.deployable
    assert len(s.problems) == 1
    assert s.problems[0].startswith(problem), s.problems


def test_bad_json_names_line_and_column(tmp_path):
    make_service(tmp_path, "svc", '{\n  "description": "d",\n}')
    (problem,) = only(scan(tmp_path)).problems
    assert problem.endswith("(line 3, column 1)")


def test_info_json_with_bom_and_not_utf8(tmp_path):
    make_service(tmp_path, "bom", "\ufeff" + json.dumps({"description": "d"}))
    d = make_service(tmp_path, "latin", None)
    (d / "info.json").write_bytes(b'{"description": "caf\xe9"}')
    cat = scan(tmp_path)
    assert cat.get("bom").deployable
    assert cat.get("latin").problems == ("info.json is not valid UTF-8",)


def test_info_json_with_lone_surrogates_or_deep_nesting(tmp_path):
    make_service(tmp_path, "surr", '{"description": "a\\ud800b"}')
    make_service(tmp_path, "key", '{"description": "d", "x": {"\\udc80": 1}}')
    make_service(tmp_path, "deep", '{"description": "d", "x": ' + "[" * 30000 + "]" * 30000 + "}")
    cat = scan(tmp_path)
    assert cat.get("surr").problems == ("info.json: description is not valid Unicode text",)
    assert cat.get("key").problems == ("info.json: x.\\udc80 is not valid Unicode text",)
    assert cat.get("deep").problems == ("info.json is JSON nested too deeply",)


def test_missing_scripts(tmp_path):
    make_service(tmp_path, "svc", {"description": "d"}, deploy=None, remove=None)
    cat = scan(tmp_path)
    assert only(cat).problems == ("deploy.sh is missing", "remove.sh is missing")
    assert cat.units == ["svc.service"]  # still watched by the probe


def test_script_that_is_a_folder_or_not_text(tmp_path):
    d = make_service(tmp_path, "svc", {"description": "d"}, deploy=None, remove=None)
    (d / "deploy.sh").mkdir()
    (d / "remove.sh").write_bytes(b"echo \xff\n")
    assert only(scan(tmp_path)).problems == (
        "deploy.sh is not a regular file",
        "remove.sh is not valid UTF-8",
    )


def test_script_with_nul(tmp_path):
    make_service(tmp_path, "svc", {"description": "d"}, deploy="echo\x00")
    assert only(scan(tmp_path)).problems == ("deploy.sh contains a NUL byte",)


def test_oversized_files(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "MAX_SCRIPT_BYTES", 10)
    monkeypatch.setattr(catalog, "MAX_ARTIFACT_BYTES", 5)
    make_service(
        tmp_path, "svc", {"description": "d"}, deploy="x" * 11, remove="x", files={"big": b"123456"}
    )
    assert only(scan(tmp_path)).problems == (
        "deploy.sh is too large (11 bytes, at most 10)",
        "big is too large (6 bytes, at most 5)",
    )


def test_symlinks(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    root = tmp_path / "service"
    d = make_service(
        root, "svc", {"description": "d"}, deploy=None, remove=None, files={"real.sh": b"echo"}
    )
    (d / "deploy.sh").symlink_to("real.sh")  # inside: fine
    (d / "leak").symlink_to(outside / "secret")
    (d / "dirleak").symlink_to(outside)
    (d / "dangling").symlink_to(d / "gone")
    os.symlink("../../outside/secret", d / "remove.sh")
    s = only(scan(root))
    assert s.script("deploy.sh").text == "echo"
    assert s.problems == (
        "remove.sh is a symlink pointing outside the service folder",
        "dirleak is a symlink pointing outside the service folder",
        "dangling is a broken symlink",
        "leak is a symlink pointing outside the service folder",
    )
    assert [a.path for a in s.artifacts] == ["real.sh"]


def test_odd_artifact_names_and_hidden_files(tmp_path):
    make_service(
        tmp_path,
        "svc",
        {"description": "d"},
        files={
            "my file.txt": b"",
            "deploy.sh~": b"",
            ".git/config": b"",
            ".DS_Store": b"",
            "sub dir/x": b"",
            "ok/.hidden": b"",
            "ok/fine.bin": b"",
        },
    )
    s = only(scan(tmp_path))
    assert s.problems == (
        "folder 'sub dir' has a name that is not allowed",
        "file 'deploy.sh~' has a name that is not allowed",
        "file 'my file.txt' has a name that is not allowed",
    )
    assert [a.path for a in s.artifacts] == ["ok/fine.bin"]


def test_too_many_files(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog, "MAX_FILES", 3)
    make_service(tmp_path, "svc", {"description": "d"}, files={f"f{i}": b"" for i in range(5)})
    s = only(scan(tmp_path))
    assert s.problems == ("more than 3 files in the service folder",)


@pytest.mark.parametrize("name", ["bad name", "-dash", "a;b", "x" * 65, "caf\u00e9"])
def test_bad_folder_names_are_listed_not_used(tmp_path, name):
    make_service(tmp_path, name, {"description": "d"})
    s = only(scan(tmp_path))
    assert s.name == name and not s.deployable
    assert s.problems == (str(InvalidName("service", name)),)
    assert s.problems[0].startswith("service name ")
    assert s.scripts == {} and s.unit == ""


def test_files_and_hidden_entries_in_service_dir(tmp_path):
    (tmp_path / "README").write_text("x")
    (tmp_path / ".git").mkdir()
    make_service(tmp_path, "ok", {"description": "d"})
    cat = scan(tmp_path)
    assert [s.name for s in cat] == ["README", "ok"]
    assert cat.get("README").problems == ("README is not a folder",)
    assert [s.name for s in cat.deployable] == ["ok"]


def test_missing_or_wrong_service_dir(tmp_path):
    assert scan(tmp_path / "nope").problems == (f"{tmp_path / 'nope'} does not exist",)
    (tmp_path / "f").write_text("")
    assert scan(tmp_path / "f").problems == (f"{tmp_path / 'f'} is not a folder",)
    assert len(scan(tmp_path / "f")) == 0


def test_a_service_folder_may_be_a_symlink(tmp_path):
    real = make_service(tmp_path / "elsewhere", "sums", {"description": "d"})
    (tmp_path / "service").mkdir()
    (tmp_path / "service" / "sums").symlink_to(real)
    assert only(scan(tmp_path / "service")).deployable


# --- init scripts --------------------------------------------------------------------------


def test_init_order_is_numeric_then_by_name():
    ordered, rejected = order_init_names(
        ["10-b.sh", "9-a.sh", "10-a.sh", "README", "01-x.sh", "x.sh", "1-.sh", "2-a b.sh", "3-y.sh"]
    )
    assert ordered == ["01-x.sh", "3-y.sh", "9-a.sh", "10-a.sh", "10-b.sh"]
    assert rejected == ["1-.sh", "2-a b.sh", "README", "x.sh"]


@given(st.lists(st.text(max_size=12)))
def test_init_order_is_a_sorted_partition(names):
    ordered, rejected = order_init_names(names)
    assert sorted(ordered + rejected) == sorted(names)
    keys = [(int(n.split("-", 1)[0]), n) for n in ordered]
    assert keys == sorted(keys)


def test_scan_init(tmp_path):
    (tmp_path / "20-b.sh").write_text("echo b\n")
    (tmp_path / "3-a.sh").write_text("echo a\n")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / ".swp").write_text("")
    (tmp_path / "5-bad.sh").write_bytes(b"\xff")
    (tmp_path / "7-out.sh").symlink_to("/etc/hostname")
    init = scan_init(tmp_path)
    assert [(s.name, s.order) for s in init.scripts] == [("3-a.sh", 3), ("20-b.sh", 20)]
    assert init.scripts[0].sha256 == hashlib.sha256(b"echo a\n").hexdigest()
    assert init.problems == (
        "'notes.txt' is not run: init scripts are named NN-name.sh (name as for services)",
        "5-bad.sh is not valid UTF-8",
        "7-out.sh is a symlink pointing outside the init folder",
    )


def test_no_init_dir_means_no_scripts(tmp_path):
    assert scan_init(tmp_path / "none") == initscripts.InitScripts()


# --- examples ------------------------------------------------------------------------------


def test_install_examples_into_a_new_data_dir(tmp_path):
    copied = install_examples(tmp_path)
    assert copied == [
        "service/hello-web",
        "service/sums",
        "init/10-motd.sh",
        "init/20-sysctl.sh",
        "init/30-user.sh",
    ]
    cat = scan(tmp_path / "service")
    assert [s.name for s in cat.deployable] == ["hello-web", "sums"]
    assert [s.name for s in scan_init(tmp_path / "init").scripts] == [
        "10-motd.sh",
        "20-sysctl.sh",
        "30-user.sh",
    ]
    assert install_examples(tmp_path) == []  # never over an existing folder


def test_install_examples_with_test_only_and_existing_folders(tmp_path):
    (tmp_path / "init").mkdir()
    (tmp_path / "init" / "01-mine.sh").write_text("true\n")
    copied = install_examples(tmp_path, test_only=True)
    assert "service/broken-deploy" in copied
    assert not [c for c in copied if c.startswith("init/")]
    assert os.listdir(tmp_path / "init") == ["01-mine.sh"]
    assert install_examples(tmp_path / "x", tmp_path / "no-examples") == []
