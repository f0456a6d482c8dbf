"""What each service operation sends to a server, as a `RemoteCommand` (pure, no I/O).

A job's run succeeds iff the agent reports exit 0, so every rule about success is in the
command itself:

- deploy   `bash -s` runs deploy.sh from stdin; if it exits 0, systemd must then have the unit
           loaded, else exit 97 (shell.EXIT_UNIT_UNKNOWN) with a `kernel: …` line on stderr.
- remove   `bash -s` runs remove.sh; if it exits 0, the unit must be gone (LoadState=not-found
           and not active), else exit 98 (shell.EXIT_UNIT_NOT_GONE).
- start, stop, restart, enable, disable   `systemctl <op> -- <unit>`.
- status   `systemctl status` text; "inactive" (exit 3) is an answer, not a failure.
- logs     `journalctl -u <unit> -n N --no-pager`.

Scripts see KERNEL_URL, KERNEL_SERVICE and KERNEL_SERVICE_URL (the signed artifact prefix).
"""

from __future__ import annotations

from kernel.exceptions import OperationRefused
from kernel.names import is_valid_name
from kernel.server.core import shell
from kernel.server.core.shell import RemoteCommand
from kernel.server.services.catalog import Service

OPERATIONS = (
    "deploy",
    "remove",
    "start",
    "stop",
    "restart",
    "enable",
    "disable",
    "status",
    "logs",
)

# Deploys download and unpack; systemctl start waits up to the unit's TimeoutStartSec (90 s
# by default); a status or log read should be quick.
TIMEOUTS = {
    "deploy": 1800.0,
    "remove": 900.0,
    "start": 180.0,
    "stop": 180.0,
    "restart": 300.0,
    "enable": 60.0,
    "disable": 60.0,
    "status": 30.0,
    "logs": 60.0,
}
DEFAULT_LOG_LINES = 200


def build(
    op: str,
    service: Service,
    *,
    kernel_url: str,
    service_url: str,
    lines: int = DEFAULT_LOG_LINES,
) -> RemoteCommand:
    """The command for `op` on `service`.

    deploy and remove need a deployable service (no problems at all); the systemctl
    operations, status and logs need only a valid name and unit, so a service whose
    deploy.sh went missing can still be stopped and inspected.
    """
    if op not in OPERATIONS:
        raise OperationRefused(f"unknown operation {op!r}; known: {', '.join(OPERATIONS)}")
    if op in ("deploy", "remove"):
        if not service.deployable:
            raise OperationRefused(
                f"cannot {op} service {service.name!r}: " + "; ".join(service.problems)
            )
        script = service.script(f"{op}.sh")
        check = shell.unit_known_check if op == "deploy" else shell.unit_gone_check
        return RemoteCommand(
            cmd=shell.run_stdin_script(then=check(service.unit)),
            stdin=script.text,
            env=script_env(service, kernel_url=kernel_url, service_url=service_url),
            timeout=TIMEOUTS[op],
            title=f"{op} {service.name}",
        )

    if not is_valid_name(service.name) or not service.unit:
        raise OperationRefused(
            f"service {service.name!r} has no valid unit: " + "; ".join(service.problems)
        )
    if op == "status":
        cmd = shell.systemctl_status(service.unit)
        title = f"status {service.name}"
    elif op == "logs":
        try:
            cmd = shell.journal_tail(service.unit, lines)
        except ValueError as e:
            raise OperationRefused(str(e)) from None
        title = f"logs {service.name} ({lines} lines)"
    else:
        cmd = shell.systemctl(op, service.unit)
        title = f"{op} {service.name}"
    return RemoteCommand(cmd=cmd, timeout=TIMEOUTS[op], title=title)


def script_env(service: Service, *, kernel_url: str, service_url: str) -> dict[str, str]:
    return {
        "KERNEL_URL": kernel_url,
        "KERNEL_SERVICE": service.name,
        "KERNEL_SERVICE_URL": service_url,
    }
