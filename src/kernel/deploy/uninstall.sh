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
#   KERNEL_AGENT_RESTORE_LEGACY=1  put back the original Kernel agent that install.sh replaced
#                         (its unit file and binary, saved in /var/lib/kernel-agent/legacy/),
#                         enabled and started as it was. Without it that copy is kept.
set -eu

: "${KERNEL_AGENT_ROOT:=}"
: "${KERNEL_AGENT_NO_SYSTEMD:=}"
: "${KERNEL_AGENT_KEEP_STATE:=}"
: "${KERNEL_AGENT_RESTORE_LEGACY:=}"

ROOT="${KERNEL_AGENT_ROOT%/}"
UNIT="$ROOT/etc/systemd/system/kernel-agent.service"
STATE="$ROOT/var/lib/kernel-agent"
LEGACY="$STATE/legacy"

say() { printf 'kernel-agent uninstall: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Put back each original agent install.sh saved (legacy/<unit>/: info, unit, binary), after
# Kernel's agent is gone and port 8001 is free. The info file is read as data, never sourced.
restore_legacy() {
    local saved key value unit unit_file binary enabled
    for saved in "$LEGACY"/*/; do
        [ -f "$saved/info" ] || continue
        unit="" unit_file="" binary="" enabled=""
        while IFS='=' read -r key value; do
            case "$key" in
            unit) unit="$value" ;;
            unit_file) unit_file="$value" ;;
            binary) binary="$value" ;;
            enabled) enabled="$value" ;;
            esac
        done <"$saved/info"
        printf '%s' "$unit" | grep -Eq '^[A-Za-z0-9:_.@-]+\.service$' ||
            die "$saved/info names no unit; restore it by hand"
        case "$unit_file" in /*) ;; *) die "$saved/info has no unit file path; restore it by hand" ;; esac
        if [ -f "$saved/unit" ]; then
            mkdir -p "$ROOT$(dirname "$unit_file")"
            cp -p -- "$saved/unit" "$ROOT$unit_file"
        fi
        case "$binary" in
        /*) if [ -f "$saved/binary" ] && [ ! -e "$ROOT$binary" ]; then cp -p -- "$saved/binary" "$ROOT$binary"; fi ;;
        esac
        if [ "$use_systemd" = 1 ]; then
            systemctl daemon-reload
            case "$enabled" in enabled*) systemctl enable --quiet "$unit" ;; esac
            systemctl start "$unit" || die "restored $unit, but it does not start (systemctl status $unit)"
        fi
        say "restored the original Kernel agent $unit"
    done
    rm -rf "$LEGACY"
}

become_root() { # as in install.sh
    [ -n "$ROOT" ] && return 0
    [ "$(id -u)" = 0 ] && return 0
    command -v sudo >/dev/null 2>&1 ||
        die "run this as root: it removes a system service, and sudo is not installed"
    say "not root: running again with sudo"
    {
        declare -p KERNEL_AGENT_ROOT KERNEL_AGENT_NO_SYSTEMD KERNEL_AGENT_KEEP_STATE \
            KERNEL_AGENT_RESTORE_LEGACY ROOT UNIT STATE LEGACY
        declare -f
        printf 'set -eu\nmain "$@"\n'
    } | sudo bash -s -- "$@"
    exit $?
}

main() {
    become_root "$@"
    use_systemd=0
    if [ "$KERNEL_AGENT_NO_SYSTEMD" != 1 ] && [ -d /run/systemd/system ]; then
        use_systemd=1
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
    say "removed"
    if [ "$KERNEL_AGENT_RESTORE_LEGACY" = 1 ]; then
        if [ -d "$LEGACY" ]; then restore_legacy; else say "no original Kernel agent was saved here: nothing to restore"; fi
    fi
    if [ "$KERNEL_AGENT_KEEP_STATE" != 1 ]; then
        if [ -d "$LEGACY" ]; then
            # The one copy of the agent it replaced is not ours to throw away.
            find "$STATE" -mindepth 1 -maxdepth 1 ! -name legacy -exec rm -rf {} +
            say "the original Kernel agent install.sh replaced is kept in $LEGACY (KERNEL_AGENT_RESTORE_LEGACY=1 puts it back)"
        else
            rm -rf "$STATE"
        fi
    fi
}

main "$@"
