#!/usr/bin/env bash
# Remove the Kernel agent from this host: the reverse of install.sh. Idempotent.
#
#   curl -fsSL '<KERNEL_URL>/agent/uninstall.sh' | bash
#
# As root, or as a user who may sudo (it then runs itself again under sudo).
#
# Stops the service and the run keeper (running commands get SIGTERM, then SIGKILL after
# 5 s), removes the unit, the agent file, its key and config, and its state dir.
#   KERNEL_AGENT_ROOT     the prefix install.sh used (default /)
#   KERNEL_AGENT_NO_SYSTEMD=1  only remove files; do not touch systemd
#   KERNEL_AGENT_KEEP_STATE=1  keep /var/lib/kernel-agent (run outputs)
set -eu

: "${KERNEL_AGENT_ROOT:=}"
: "${KERNEL_AGENT_NO_SYSTEMD:=}"
: "${KERNEL_AGENT_KEEP_STATE:=}"

ROOT="${KERNEL_AGENT_ROOT%/}"
UNIT="$ROOT/etc/systemd/system/kernel-agent.service"

say() { printf 'kernel-agent uninstall: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

become_root() { # as in install.sh
    [ -n "$ROOT" ] && return 0
    [ "$(id -u)" = 0 ] && return 0
    command -v sudo >/dev/null 2>&1 ||
        die "run this as root: it removes a system service, and sudo is not installed"
    say "not root: running again with sudo"
    {
        declare -p KERNEL_AGENT_ROOT KERNEL_AGENT_NO_SYSTEMD KERNEL_AGENT_KEEP_STATE ROOT UNIT
        declare -f
        printf 'set -eu\nmain "$@"\n'
    } | sudo bash -s -- "$@"
    exit $?
}

main() {
    become_root "$@"
    if [ "$KERNEL_AGENT_NO_SYSTEMD" != 1 ] && [ -d /run/systemd/system ]; then
        if systemctl cat kernel-agent.service >/dev/null 2>&1; then
            # KillMode=process spares the keeper on stop; signal every process of the unit
            # first: the agent exits and the keeper cancels its runs, then exits.
            systemctl kill --signal=SIGTERM kernel-agent.service 2>/dev/null || true
            cgroup="$(systemctl show -p ControlGroup --value kernel-agent.service 2>/dev/null || true)"
            procs="/sys/fs/cgroup$cgroup/cgroup.procs"
            for _ in $(seq 1 40); do # the keeper needs up to ~6 s to end its runs
                [ -n "$cgroup" ] && [ -n "$(cat "$procs" 2>/dev/null)" ] || break
                sleep 0.25
            done
            systemctl disable --now --quiet kernel-agent.service 2>/dev/null || true
            systemctl kill --signal=SIGKILL kernel-agent.service 2>/dev/null || true
        fi
        rm -f "$UNIT"
        systemctl daemon-reload
        systemctl reset-failed kernel-agent.service 2>/dev/null || true
    elif [ "$KERNEL_AGENT_NO_SYSTEMD" != 1 ] && [ -z "$ROOT" ]; then
        die "systemd is not running on this host; set KERNEL_AGENT_NO_SYSTEMD=1 to only remove the files"
    else
        rm -f "$UNIT"
    fi
    rm -f "$ROOT/usr/local/bin/kernel-agent"
    rm -rf "$ROOT/usr/local/lib/kernel-agent"
    rm -rf "$ROOT/etc/kernel-agent"
    if [ "$KERNEL_AGENT_KEEP_STATE" != 1 ]; then
        rm -rf "$ROOT/var/lib/kernel-agent"
    fi
    say "removed"
}

main "$@"
