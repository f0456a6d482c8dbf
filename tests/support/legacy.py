"""A checkout of the original kernel-server, made for a test: its ``machine_list.txt`` pickled
with a stand-in ``mod_kernel.Machine`` (the original class, minus its network calls), and
``static/service`` / ``static/init`` in the original layout (seed README)."""

from __future__ import annotations

import io
import json
import pickle
import sys
import tarfile
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

OLD_SERVER = "https://kernel.example.org"  # the original's hard-coded address
MOD_KERNEL = f'''import requests

DOWNLOAD_URL = "{OLD_SERVER}/static"  # no slash at the end


class Machine:
    def __init__(self, url):
        self.url = url
        self.service_active = dict()
        self.service_enabled = dict()
        self.online = False
'''

# A service as the seed README writes one: its files packed in a .tgz next to the scripts,
# fetched from the original server's hard-coded URL.
WEB_DEPLOY = f"""#!/usr/bin/env bash
cd /tmp
wget -q {OLD_SERVER}/static/service/legacy-web/legacy-web.tgz
tar xzf legacy-web.tgz
rm -rf legacy-web.tgz
cd legacy-web_pack
mkdir -p /root/legacy-web
cp index.html /root/legacy-web
cp legacy-web.service /usr/lib/systemd/system/
systemctl daemon-reload
systemctl enable legacy-web
systemctl start legacy-web
rm -rf /tmp/legacy-web_pack
"""
WEB_REMOVE = """#!/usr/bin/env bash
systemctl disable legacy-web
systemctl stop legacy-web
rm -rf /usr/lib/systemd/system/legacy-web.service
systemctl daemon-reload
rm -rf /root/legacy-web
"""
WEB_PAGE = "<h1>legacy web</h1>\n"
WEB_PORT = 8090
WEB_UNIT = f"""[Unit]
Description=legacy web (a test service)

[Service]
ExecStart=/usr/bin/python3 -m http.server {WEB_PORT} --directory /root/legacy-web

[Install]
WantedBy=multi-user.target
"""


@contextmanager
def stand_in_mod_kernel() -> Iterator[type]:
    """``mod_kernel.Machine`` importable for pickle while the block runs."""
    mod = types.ModuleType("mod_kernel")

    class Machine:
        def __init__(self, url: object) -> None:
            self.url = url
            self.service_active: dict[str, str] = {}
            self.service_enabled: dict[str, str] = {}
            self.online = False

    Machine.__module__ = "mod_kernel"
    Machine.__qualname__ = "Machine"
    mod.Machine = Machine  # type: ignore[attr-defined]
    before = sys.modules.get("mod_kernel")
    sys.modules["mod_kernel"] = mod
    try:
        yield Machine
    finally:
        if before is None:
            del sys.modules["mod_kernel"]
        else:
            sys.modules["mod_kernel"] = before


def machine_list(machines: dict[object, object], protocol: int = 3) -> bytes:
    """The pickle the original's write_db() made (protocol 3: Python 3.6's default)."""
    with stand_in_mod_kernel() as machine:
        objs = {}
        for name, url in machines.items():
            m = machine(url)
            m.service_enabled = {"legacy-web": "unknown"}
            m.service_active = {"legacy-web": "unknown"}
            m.online = True
            objs[name] = m
        return pickle.dumps(objs, protocol=protocol)


def web_tgz() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in (("index.html", WEB_PAGE), ("legacy-web.service", WEB_UNIT)):
            data = text.encode()
            info = tarfile.TarInfo(f"legacy-web_pack/{name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_checkout(root: Path, machines: dict[object, object]) -> Path:
    """The original server's folder: main.py, mod_kernel.py, machine_list.txt and static/."""
    root.mkdir(parents=True)
    (root / "mod_kernel.py").write_text(MOD_KERNEL)
    (root / "main.py").write_text('PATH = "/root/kernel-server/"\n')
    (root / "machine_list.txt").write_bytes(machine_list(machines))
    static = root / "static"
    web = static / "service" / "legacy-web"
    web.mkdir(parents=True)
    (web / "info.json").write_text(json.dumps({"description": "legacy web - 测试服务"}))
    (web / "deploy.sh").write_text(WEB_DEPLOY)
    (web / "remove.sh").write_text(WEB_REMOVE)
    (web / "legacy-web.tgz").write_bytes(web_tgz())
    half = static / "service" / "half"  # no remove.sh: the catalogue rejects it
    half.mkdir()
    (half / "info.json").write_text('{"description": "half a service"}')
    (half / "deploy.sh").write_text("#!/usr/bin/env bash\ntrue\n")
    init = static / "init"
    init.mkdir()
    (init / "01-first.sh").write_text("#!/usr/bin/env bash\necho one > /root/legacy-init-1\n")
    (init / "02-second.sh").write_text(
        "#!/usr/bin/env bash\ntest -f /root/legacy-init-1 && echo two > /root/legacy-init-2\n"
    )
    (init / "notes.txt").write_text("not a script\n")
    return root
