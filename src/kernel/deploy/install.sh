#!/usr/bin/env bash
# Install (or update) the Kernel agent on this host. Idempotent: run it again to update.
#
#   curl -fsSL '<KERNEL_URL>/agent/install.sh?token=<token>' | bash
#
# Run it as root, or as a user who may sudo: it then runs itself again under sudo (the same
# code and settings, from memory: it may have come on stdin).
#
# Settings (environment; the server serves this script with its own values as defaults):
#   KERNEL_URL            server base URL (may be empty for a local install)
#   KERNEL_AGENT_SOURCE   URL or local path of the agent file (default $KERNEL_URL/agent/kernel-agent.py)
#   KERNEL_AGENT_SHA256   expected SHA-256 of the agent file; a mismatch stops the install
#   KERNEL_AGENT_KEY      the agent key (64 hex chars); if empty, an existing key is kept or a
#                         fresh one is made and printed
#   KERNEL_AGENT_LISTEN   listen address (default 0.0.0.0:8001)
#   KERNEL_AGENT_CONF     extra "key = value" lines for agent.conf (allow_ips, tls_cert, ...)
#   KERNEL_ENROLL_TOKEN   if set: POST $KERNEL_URL/agent/enroll {"token", "port", "hostname"}
#   KERNEL_TLS_PIN        sha256//<base64> of the server's TLS key: every https download and the
#                         enrollment go through curl --pinnedpubkey (the one-liner has the same)
#   KERNEL_TLS_INSECURE=1 with a pin: skip the CA check too (a self-signed server certificate)
#   KERNEL_AGENT_ROOT     install under this prefix instead of / (tests, image building)
#   KERNEL_AGENT_NO_SYSTEMD=1  only write files; do not touch systemd
#   KERNEL_AGENT_REPLACE_LEGACY  1 (default): a running original Kernel agent (a systemd unit
#                         whose ExecStart runs a binary named `kernel`, listening on 8001) is
#                         stopped, disabled and saved in /var/lib/kernel-agent/legacy/
#                         (uninstall.sh with KERNEL_AGENT_RESTORE_LEGACY=1 puts it back);
#                         0: leave it alone
#   KERNEL_AGENT_LEGACY_API=1  the original server may keep using /api/ExecCmd: the address
#                         the replaced agent was started with (-s) goes into legacy_allow_ips
set -eu

: "${KERNEL_URL:=}"
: "${KERNEL_AGENT_SOURCE:=}"
: "${KERNEL_AGENT_SHA256:=}"
: "${KERNEL_AGENT_KEY:=}"
: "${KERNEL_AGENT_LISTEN:=0.0.0.0:8001}"
: "${KERNEL_AGENT_CONF:=}"
: "${KERNEL_ENROLL_TOKEN:=}"
: "${KERNEL_TLS_PIN:=}"
: "${KERNEL_TLS_INSECURE:=}"
: "${KERNEL_AGENT_ROOT:=}"
: "${KERNEL_AGENT_NO_SYSTEMD:=}"
: "${KERNEL_AGENT_REPLACE_LEGACY:=1}"
: "${KERNEL_AGENT_LEGACY_API:=}"

ROOT="${KERNEL_AGENT_ROOT%/}"
LIB_DIR="$ROOT/usr/local/lib/kernel-agent"
AGENT="$LIB_DIR/kernel_agent.py"  # a module name: the unit runs it with -m
BIN="$ROOT/usr/local/bin/kernel-agent"
ETC="$ROOT/etc/kernel-agent"
CONF="$ETC/agent.conf"
KEY_FILE="$ETC/agent.key"
STATE="$ROOT/var/lib/kernel-agent"
UNIT="$ROOT/etc/systemd/system/kernel-agent.service"
LEGACY="$STATE/legacy" # copies of the original Kernel agents this replaced

say() { printf 'kernel-agent install: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

find_python() {
    for py in python3 /usr/bin/python3 /usr/local/bin/python3; do
        if command -v "$py" >/dev/null 2>&1 &&
            "$py" -c 'import sys; sys.exit(sys.version_info < (3, 8))' 2>/dev/null; then
            command -v "$py"
            return 0
        fi
    done
    return 1
}

# curl's TLS options for the server's pin (as an array: "${curl_tls[@]}"); empty without one.
curl_tls=()
if [ -n "$KERNEL_TLS_PIN" ]; then
    curl_tls=(--pinnedpubkey "$KERNEL_TLS_PIN")
    if [ "$KERNEL_TLS_INSECURE" = 1 ]; then curl_tls+=(--insecure); fi
fi

fetch() { # fetch SOURCE DEST
    case "$1" in
    https://*)
        if [ -n "$KERNEL_TLS_PIN" ]; then # only curl checks a pin (and the line ran curl)
            command -v curl >/dev/null 2>&1 || die "KERNEL_TLS_PIN is set: curl is needed"
            curl -fsSL --retry 3 "${curl_tls[@]}" -o "$2" "$1" ||
                die "cannot download $1 (with the server's TLS pin)"
            return 0
        fi
        fetch_plain "$1" "$2"
        ;;
    http://*) fetch_plain "$1" "$2" ;;
    file://*) cp -- "${1#file://}" "$2" || die "cannot copy ${1#file://}" ;;
    *) cp -- "$1" "$2" || die "cannot copy $1" ;;
    esac
}

fetch_plain() { # fetch_plain URL DEST
    if command -v curl >/dev/null 2>&1; then
        curl -fsSL --retry 3 -o "$2" "$1" || die "cannot download $1"
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$2" "$1" || die "cannot download $1"
    else
        "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
            "$1" "$2" </dev/null || die "cannot download $1"
    fi
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    else
        "$PYTHON" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
    fi
}

write_unit() {
    cat >"$UNIT.tmp" <<'UNIT_EOF'
[Unit]
Description=Kernel agent (runs commands for a Kernel server)
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
# -S: no site-packages; the agent is stdlib-only and this saves memory.
# -m from its own folder: the byte-compiled module is loaded (not the source compiled at
# every start), which leaves the agent and its keeper some 6 MB smaller.
ExecStart=/usr/bin/env PYTHONPATH=/usr/local/lib/kernel-agent python3 -S -m kernel_agent --config /etc/kernel-agent/agent.conf
Restart=on-failure
RestartSec=2
# Runs outlive the agent: a stop or restart signals only the agent itself; the run keeper
# and the commands it started carry on, and the restarted agent re-attaches to them.
KillMode=process
TimeoutStopSec=15

[Install]
WantedBy=multi-user.target
UNIT_EOF
    mv -f "$UNIT.tmp" "$UNIT"
}

health_check() { # wait until the agent answers /healthz on this host
    "$PYTHON" - "$KERNEL_AGENT_LISTEN" "$CONF" <<'PY_EOF'
import ssl, sys, time, urllib.error, urllib.request
listen, conf = sys.argv[1], sys.argv[2]
host, _, port = listen.rpartition(":")
host = host.strip("[]")
host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
tls = any(l.split("=")[0].strip() == "tls_cert" and l.partition("=")[2].strip()
          for l in open(conf) if not l.lstrip().startswith("#"))
url = "%s://%s:%s/healthz" % ("https" if tls else "http", "[%s]" % host if ":" in host else host, port)
ctx = ssl._create_unverified_context()
for _ in range(50):
    try:
        if urllib.request.urlopen(url, timeout=2, context=ctx).read() == b"ok":
            sys.exit(0)
    except urllib.error.HTTPError as e:
        if e.code == 403:
            sys.exit(0)  # an older agent's allow_ips fence: it is up
        # any other answer is not this agent (e.g. another program holding the port)
    except Exception:
        pass
    time.sleep(0.2)
sys.exit(1)
PY_EOF
}

enroll() {
    [ -n "$KERNEL_URL" ] || die "KERNEL_ENROLL_TOKEN is set but KERNEL_URL is empty"
    if [ -n "$KERNEL_TLS_PIN" ]; then
        enroll_pinned ||
            die "enrollment failed (the agent is installed and running; rerun with a new token)"
        return 0
    fi
    "$PYTHON" - "$KERNEL_URL" "$KERNEL_ENROLL_TOKEN" "${KERNEL_AGENT_LISTEN##*:}" <<'PY_EOF' ||
import json, socket, sys, urllib.error, urllib.request
url, token, port = sys.argv[1].rstrip("/") + "/agent/enroll", sys.argv[2], int(sys.argv[3])
body = json.dumps({"token": token, "port": port, "hostname": socket.gethostname()}).encode()
req = urllib.request.Request(url, body, {"Content-Type": "application/json"}, method="POST")
try:
    print(urllib.request.urlopen(req, timeout=60).read().decode("utf-8", "replace"))
except urllib.error.HTTPError as e:
    sys.stderr.write("enroll refused: %s %s\n" % (e.code, e.read().decode("utf-8", "replace")[:500]))
    sys.exit(1)
except OSError as e:
    sys.stderr.write("cannot reach %s: %s\n" % (url, e))
    sys.exit(1)
PY_EOF
        die "enrollment failed (the agent is installed and running; rerun with a new token)"
}

enroll_pinned() { # the same POST through curl, which checks the server's TLS pin
    local body code
    body="$("$PYTHON" -c 'import json, socket, sys
print(json.dumps({"token": sys.argv[1], "port": int(sys.argv[2]), "hostname": socket.gethostname()}))' \
        "$KERNEL_ENROLL_TOKEN" "${KERNEL_AGENT_LISTEN##*:}" </dev/null)" || return 1
    code="$(printf '%s' "$body" | curl -sS --max-time 60 "${curl_tls[@]}" -o "$scratch/enroll.out" \
        -w '%{http_code}' -H 'Content-Type: application/json' --data-binary @- \
        "${KERNEL_URL%/}/agent/enroll")" || {
        say "cannot reach ${KERNEL_URL%/}/agent/enroll (with the server's TLS pin)"
        return 1
    }
    if [ "$code" != 200 ]; then
        say "enroll refused: $code $(head -c 500 "$scratch/enroll.out")"
        return 1
    fi
    cat "$scratch/enroll.out"
    echo
}

# The original Kernel's Go agent: a running systemd unit whose ExecStart runs a binary named
# `kernel` and that listens on port 8001 (main.go: ListenAndServe(":8001")). Both must hold:
# a unit that merely shares the binary's name is left alone. One line per unit found, tab-
# separated: unit, unit file, binary, the server address it allowed (-s), UnitFileState
# ("-" for none).
find_legacy() {
    "$PYTHON" - <<'PY_EOF'
import os, re, subprocess, sys
GO_PORT, GO_DEFAULT_SERVER = 8001, "222.200.97.179"  # main.go: its port, and -s by default

def out(*cmd):
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              universal_newlines=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""

def listening_inodes():
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == GO_PORT:
                found.add(f[9])
    return found

def pids_of(unit):
    pids = set()
    group = unit.get("ControlGroup", "")
    for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"):
        try:
            pids |= set(open(base + group + "/cgroup.procs").read().split()) if group else set()
        except OSError:
            pass
    if unit.get("MainPID", "0") != "0":
        pids.add(unit["MainPID"])
    return pids

def holds(pid, inodes):
    try:
        fds = os.listdir("/proc/%s/fd" % pid)
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink("/proc/%s/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False

running = out("systemctl", "list-units", "--type=service", "--state=running", "--no-legend",
              "--plain")
units = [line.split()[0] for line in running.splitlines() if line.split()]
props = ("Id", "ExecStart", "MainPID", "ControlGroup", "FragmentPath", "UnitFileState")
shown = out("systemctl", "show", *[a for p in props for a in ("-p", p)], "--", *units) if units else ""
inodes = None
for block in shown.split("\n\n"):
    unit = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
    m = re.search(r"path=(\S+) ; argv\[\]=([^;]*)", unit.get("ExecStart", ""))
    if not m or os.path.basename(m.group(1)) != "kernel":
        continue
    if inodes is None:
        inodes = listening_inodes()
    if not any(holds(pid, inodes) for pid in pids_of(unit)):
        sys.stderr.write("kernel-agent install: %s runs a binary named kernel but does not listen"
                         " on %d: not the original Kernel agent, left alone\n" % (unit["Id"], GO_PORT))
        continue
    argv, server = m.group(2).split(), GO_DEFAULT_SERVER
    for i, arg in enumerate(argv[1:], 1):  # Go's flag package: -s X, --s X, -s=X, --s=X
        if arg in ("-s", "--s") and i + 1 < len(argv):
            server = argv[i + 1]
        elif arg.startswith(("-s=", "--s=")):
            server = arg.split("=", 1)[1]
    fields = (unit["Id"], unit.get("FragmentPath"), m.group(1), server, unit.get("UnitFileState"))
    print("\t".join(f or "-" for f in fields))  # "-": empty fields would merge in bash's read
PY_EOF
}

# Stop, disable and keep a copy of each original agent find_legacy found. Its unit file moves
# into the copy: nothing starts it again, and a unit of the same name (the original's own
# install.sh named it kernel-agent.service, as Kernel does) cannot shadow Kernel's.
replace_legacy() {
    [ -n "$legacy_found" ] || return 0
    local unit file bin server enabled saved
    while IFS="$(printf '\t')" read -r unit file bin server enabled; do
        saved="$LEGACY/$unit"
        say "replacing the original Kernel agent $unit ($bin on port 8001); a copy is kept in $saved"
        mkdir -p -m 0700 "$LEGACY" "$saved"
        if [ -f "$bin" ]; then cp -p -- "$bin" "$saved/binary" || die "cannot copy $bin"; fi
        if [ -f "$file" ]; then cp -p -- "$file" "$saved/unit" || die "cannot copy $file"; fi
        printf 'unit=%s\nunit_file=%s\nbinary=%s\nserver=%s\nenabled=%s\n' \
            "$unit" "$file" "$bin" "$server" "$enabled" >"$saved/info"
        systemctl stop "$unit" || die "cannot stop $unit"
        systemctl disable --quiet "$unit" 2>/dev/null || true
        if [ -f "$file" ] && [ -f "$saved/unit" ]; then rm -f -- "$file"; fi
    done <<LEGACY_EOF
$legacy_found
LEGACY_EOF
    systemctl daemon-reload
}

# The addresses the original agents allowed (-s), found now or replaced by an earlier run.
legacy_servers() {
    {
        if [ -n "$legacy_found" ]; then printf '%s\n' "$legacy_found" | cut -f4; fi
        cat "$LEGACY"/*/info 2>/dev/null | sed -n 's/^server=//p' || true
    } | grep -v '^-\?$' | sort -u | paste -sd, -
}

# As root already: nothing to do. Otherwise run this same script again under sudo: its
# functions and settings are printed back as bash (declare -f / -p quote them), so nothing is
# fetched twice and nothing the user set is lost on the way through sudo's clean environment.
become_root() {
    [ -n "$ROOT" ] && return 0
    [ "$(id -u)" = 0 ] && return 0
    command -v sudo >/dev/null 2>&1 ||
        die "run this as root: it needs root to install a system service, and sudo is not installed"
    say "not root: running again with sudo"
    {
        declare -p KERNEL_URL KERNEL_AGENT_SOURCE KERNEL_AGENT_SHA256 KERNEL_AGENT_KEY \
            KERNEL_AGENT_LISTEN KERNEL_AGENT_CONF KERNEL_ENROLL_TOKEN KERNEL_AGENT_ROOT \
            KERNEL_AGENT_NO_SYSTEMD KERNEL_AGENT_REPLACE_LEGACY KERNEL_AGENT_LEGACY_API \
            KERNEL_TLS_PIN KERNEL_TLS_INSECURE curl_tls \
            ROOT LIB_DIR AGENT BIN ETC CONF KEY_FILE STATE UNIT LEGACY
        declare -f
        printf 'set -eu\nmain "$@"\n'
    } | sudo bash -s -- "$@"
    exit $?
}

main() {
    become_root "$@"
    PYTHON="$(find_python)" || die "python3 (3.8 or newer) is required"
    case "$KERNEL_AGENT_LISTEN" in
    *:[0-9]*) ;;
    *) die "KERNEL_AGENT_LISTEN must be HOST:PORT, got '$KERNEL_AGENT_LISTEN'" ;;
    esac
    use_systemd=1
    if [ "$KERNEL_AGENT_NO_SYSTEMD" = 1 ]; then
        use_systemd=0
    elif [ ! -d /run/systemd/system ]; then
        die "systemd is not running on this host (PID 1 is $(cat /proc/1/comm 2>/dev/null || echo unknown)); set KERNEL_AGENT_NO_SYSTEMD=1 to only install the files"
    fi
    source="$KERNEL_AGENT_SOURCE"
    if [ -z "$source" ]; then
        [ -n "$KERNEL_URL" ] || die "set KERNEL_URL or KERNEL_AGENT_SOURCE"
        source="${KERNEL_URL%/}/agent/kernel-agent.py"
    fi

    if [ -n "$KERNEL_AGENT_KEY" ]; then
        printf '%s' "$KERNEL_AGENT_KEY" | grep -Eq '^[0-9a-fA-F]{64}$' ||
            die "KERNEL_AGENT_KEY must be 64 hex characters"
    fi
    legacy_found=""
    if [ "$use_systemd" = 1 ] && [ -z "$ROOT" ]; then
        legacy_found="$(find_legacy)" || die "cannot look for the original Kernel agent"
    fi
    if [ -n "$legacy_found" ] && [ "$KERNEL_AGENT_REPLACE_LEGACY" = 0 ]; then
        names="$(printf '%s\n' "$legacy_found" | cut -f1 | paste -sd' ' -)"
        case " $names " in *" kernel-agent.service "*)
            die "the original Kernel agent runs here as kernel-agent.service, the name of Kernel's own unit: it cannot stay beside it (leave KERNEL_AGENT_REPLACE_LEGACY unset to replace it); nothing installed" ;;
        esac
        case "$KERNEL_AGENT_LISTEN" in *:8001)
            die "the original Kernel agent ($names) holds port 8001: set KERNEL_AGENT_LISTEN to another port to keep it, or leave KERNEL_AGENT_REPLACE_LEGACY unset to replace it; nothing installed" ;;
        esac
        say "leaving the original Kernel agent ($names) alone: KERNEL_AGENT_REPLACE_LEGACY=0"
        legacy_found=""
    fi
    legacy_api=""
    if [ "$KERNEL_AGENT_LEGACY_API" = 1 ]; then
        legacy_api="$(legacy_servers)"
        [ -n "$legacy_api" ] ||
            die "KERNEL_AGENT_LEGACY_API=1, but no original Kernel agent runs here or was replaced before"
    fi

    # Everything is fetched and checked in a scratch dir first: a refusal changes nothing.
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    fetch "$source" "$scratch/kernel-agent.py"
    sum="$(sha256_of "$scratch/kernel-agent.py")"
    if [ -n "$KERNEL_AGENT_SHA256" ]; then
        [ "$sum" = "$(printf '%s' "$KERNEL_AGENT_SHA256" | tr 'A-F' 'a-f')" ] ||
            die "SHA-256 of $source is $sum, expected $KERNEL_AGENT_SHA256; nothing installed"
    else
        say "warning: KERNEL_AGENT_SHA256 not set; agent file not verified (sha256 $sum)"
    fi
    version="$("$PYTHON" "$scratch/kernel-agent.py" --version </dev/null 2>/dev/null || true)"
    case "$version" in
    "kernel-agent "*) ;;
    *) die "$source is not a Kernel agent file" ;;
    esac
    {
        echo "# Written by the Kernel agent install script; rerunning it rewrites this file."
        echo "listen = $KERNEL_AGENT_LISTEN"
        echo "key_file = $KEY_FILE"
        echo "state_dir = $STATE"
        if [ -n "$KERNEL_AGENT_CONF" ]; then
            echo "# from KERNEL_AGENT_CONF"
            printf '%s\n' "$KERNEL_AGENT_CONF"
        fi
        if [ -n "$legacy_api" ]; then
            echo "# KERNEL_AGENT_LEGACY_API=1: the original server may still use /api/ExecCmd"
            echo "legacy_allow_ips = $legacy_api"
        fi
    } >"$scratch/agent.conf"
    printf '%064d\n' 0 >"$scratch/check.key"
    "$PYTHON" "$scratch/kernel-agent.py" check --config "$scratch/agent.conf" \
        --key-file "$scratch/check.key" </dev/null >/dev/null ||
        die "the configuration is not valid (see above); nothing installed"

    mkdir -p "$LIB_DIR" "$ROOT/usr/local/bin" "$ETC" "$(dirname "$UNIT")"
    mkdir -p -m 0700 "$STATE"
    chmod 0755 "$scratch/kernel-agent.py"
    mv -f "$scratch/kernel-agent.py" "$AGENT.new"
    mv -f "$AGENT.new" "$AGENT"
    "$PYTHON" -m py_compile "$AGENT" 2>/dev/null || say "warning: cannot byte-compile $AGENT"
    ln -sfn kernel_agent.py "$LIB_DIR/kernel-agent.py"  # the path of earlier versions
    ln -sfn "${AGENT#"$ROOT"}" "$BIN"
    printed_key=""
    if [ -n "$KERNEL_AGENT_KEY" ]; then
        (umask 077 && printf '%s\n' "$KERNEL_AGENT_KEY" >"$KEY_FILE.tmp")
        mv -f "$KEY_FILE.tmp" "$KEY_FILE"
    elif [ ! -s "$KEY_FILE" ]; then
        printed_key="$("$PYTHON" "$AGENT" init --force --key-file "$KEY_FILE" </dev/null)" ||
            die "cannot write $KEY_FILE"
    fi
    chmod 0600 "$KEY_FILE"
    chmod 0644 "$scratch/agent.conf"
    mv -f "$scratch/agent.conf" "$CONF.new"
    mv -f "$CONF.new" "$CONF"
    replace_legacy
    write_unit

    if [ "$use_systemd" = 1 ]; then
        systemctl daemon-reload
        systemctl enable --quiet kernel-agent.service
        # KillMode=process: restarting replaces only the agent; running commands carry on.
        systemctl restart kernel-agent.service
        if ! health_check; then
            journalctl -u kernel-agent.service -n 20 --no-pager >&2 || true
            if [ -n "$legacy_found" ]; then
                say "the original agent is saved in $LEGACY; uninstall.sh with KERNEL_AGENT_RESTORE_LEGACY=1 puts it back"
            fi
            die "the agent did not answer on $KERNEL_AGENT_LISTEN"
        fi
        say "kernel-agent is running on $KERNEL_AGENT_LISTEN"
    else
        say "files installed under ${ROOT:-/}; systemd left alone (KERNEL_AGENT_NO_SYSTEMD=1)"
    fi
    if [ -n "$printed_key" ]; then
        say "a fresh key was written to $KEY_FILE; add this server in Kernel with this key:"
        printf '%s\n' "$printed_key"
    fi
    if [ -n "$KERNEL_ENROLL_TOKEN" ]; then
        enroll
    fi
}

main "$@"
