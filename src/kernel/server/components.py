"""What one server process is made of, in one place: the database, the live event bus, the
catalogue, and the background services — the job runner, the scheduler, the status poller,
the alerts (evaluator and sender) and, with LOCAL_AGENT, the local agent — listed in the
order they start.

`create_app` builds them (`app.extensions["kernel"]`); whoever serves the app (kernel-server,
a test fixture, a benchmark) starts and stops the background with `start()` / `stop()`.
Nothing starts on its own, and nothing is patched in: the list is the contract."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from flask import Flask, current_app

if TYPE_CHECKING:
    from kernel.server.alerts.service import AlertService
    from kernel.server.auth.limiter import LoginLimiter
    from kernel.server.cluster.membership import Membership
    from kernel.server.cluster.relay import Relay
    from kernel.server.core.db import Database
    from kernel.server.core.events import EventBus
    from kernel.server.inventory.local_agent import LocalAgent
    from kernel.server.inventory.tlspin import PinSource
    from kernel.server.jobs.runner import Runner
    from kernel.server.schedules.scheduler import Scheduler
    from kernel.server.services.cache import CatalogueCache
    from kernel.server.status.poller import Poller

KEY = "kernel"


class Background(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Components:
    db: Database
    bus: EventBus
    catalogue: CatalogueCache
    pins: PinSource  # the TLS pin of install one-liners (read at start)
    membership: Membership
    runner: Runner
    scheduler: Scheduler
    poller: Poller
    limiter: LoginLimiter
    alerts: AlertService
    local_agent: LocalAgent | None = None
    relay: Relay | None = None  # live events to and from other replicas (PostgreSQL)
    poll: bool = True  # the poller runs with the others (STATUS_POLLER)
    alert: bool = True  # the alerts service runs with the others (ALERTS)
    _started: list[Background] = field(default_factory=list, repr=False)

    @property
    def background(self) -> list[Background]:
        """The background services in start order (stopped in reverse)."""
        services: list[Background] = [self.membership]
        if self.relay is not None:
            services.append(self.relay)
        services.append(self.runner)
        # The scheduler after the runner: its first firings go straight to a running runner.
        services.append(self.scheduler)
        if self.poll:
            services.append(self.poller)
        if self.alert:
            services.append(self.alerts)
        if self.local_agent is not None:
            services.append(self.local_agent)
        return services

    def start(self) -> None:
        self.pins.warm()
        for service in self.background:
            if service not in self._started:
                service.start()
                self._started.append(service)

    def stop(self) -> None:
        while self._started:
            self._started.pop().stop()

    def joined(self, server_id: int) -> None:
        """A server has (new) agent details, committed: its queued init scripts start (the
        runner is woken) and its status is probed now rather than at the next round, so a new
        server does not show "unknown" for an interval."""
        self.runner.wake()
        self.probe_now([server_id])

    def probe_now(self, server_ids: list[int]) -> None:
        """After an action on these servers (a service operation ended, an edit): probe them
        now, so what pages show is fresh rather than up to an interval old."""
        if self.poll:
            self.poller.refresh(server_ids)

    def close(self) -> None:
        """Stop the background and close the database (the end of a process or a test); also
        the services a test started one by one (stopping one that is not running is
        nothing)."""
        self.stop()
        for service in reversed(self.background):
            service.stop()
        self.db.dispose()


def components(app: Flask | None = None) -> Components:
    found: Components = (app or current_app).extensions[KEY]
    return found
