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

ROOT="${KERNEL_AGENT_ROOT%/}"
LIB_DIR="$ROOT/usr/local/lib/kernel-agent"
AGENT="$LIB_DIR/kernel_agent.py"  # a module name: the unit runs it with -m
BIN="$ROOT/usr/local/bin/kernel-agent"
ETC="$ROOT/etc/kernel-agent"
CONF="$ETC/agent.conf"
KEY_FILE="$ETC/agent.key"
STATE="$ROOT/var/lib/kernel-agent"
UNIT="$ROOT/etc/systemd/system/kernel-agent.service"

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
    except urllib.error.HTTPError:
        sys.exit(0)  # any HTTP answer means the agent is up (an allow_ips fence may answer 403)
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
            KERNEL_AGENT_NO_SYSTEMD KERNEL_TLS_PIN KERNEL_TLS_INSECURE curl_tls \
            ROOT LIB_DIR AGENT BIN ETC CONF KEY_FILE STATE UNIT
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
    write_unit

    if [ "$use_systemd" = 1 ]; then
        systemctl daemon-reload
        systemctl enable --quiet kernel-agent.service
        # KillMode=process: restarting replaces only the agent; running commands carry on.
        systemctl restart kernel-agent.service
        if ! health_check; then
            journalctl -u kernel-agent.service -n 20 --no-pager >&2 || true
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
