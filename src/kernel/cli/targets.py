"""Which servers a command is for: ``--server`` names (lists and host sets allowed), ``--tag``,
``--all`` — the API's ``targets`` object — and choosing them from the inventory the way the
server does, for the commands that must know the names first (``--parallel``, init scripts)."""

from __future__ import annotations

from .errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Targets:
    __slots__ = ("all", "servers", "tags")

    def __init__(
        self, servers: list[str] | None = None, tags: list[str] | None = None, all: bool = False
    ) -> None:
        self.servers = servers or []
        self.tags = tags or []
        self.all = all

    @classmethod
    def parse(cls, servers: list[str], tags: list[str], all_: bool) -> Targets:
        names: list[str] = []
        for arg in servers:
            if "[" in arg:
                from .nodeset import expand

                names.extend(expand(arg))
            else:
                names.extend(p.strip() for p in arg.split(",") if p.strip())
        tag_list = [t.strip() for arg in tags for t in arg.split(",") if t.strip()]
        return cls(list(dict.fromkeys(names)), list(dict.fromkeys(tag_list)), all_)

    def __bool__(self) -> bool:
        return bool(self.servers or self.tags or self.all)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Targets) and self.body() == other.body()

    def __repr__(self) -> str:
        return f"Targets({self.servers!r}, {self.tags!r}, all={self.all})"

    def body(self) -> dict[str, object]:
        """The API's ``targets`` object."""
        return {"servers": self.servers, "tags": self.tags, "all": self.all}

    def require(self, what: str = "this command") -> Targets:
        if not self:
            raise UsageError(f"choose the servers for {what}: --server NAME, --tag TAG or --all")
        return self


def choose(servers: list[dict[str, Any]], targets: Targets) -> tuple[list[str], list[str]]:
    """(names chosen, names skipped as not joined) from ``GET /api/v1/servers``'s list — the
    server's own rule (jobs.resolve_targets): the union of names, tags and all; an unknown
    name, or a named server that has not joined, is an error."""
    by_name = {str(s.get("name")): s for s in servers}
    unknown = [n for n in targets.servers if n not in by_name]
    if unknown:
        raise UsageError(f"no such server(s): {', '.join(sorted(unknown))}")
    wanted = set(targets.tags)
    chosen = [
        s
        for s in servers
        if targets.all or s.get("name") in targets.servers or wanted & set(s.get("tags") or [])
    ]
    joined = sorted(str(s["name"]) for s in chosen if s.get("agent_url"))
    skipped = sorted(str(s["name"]) for s in chosen if not s.get("agent_url"))
    pending = [n for n in targets.servers if n in skipped]
    if pending:
        raise UsageError(f"server(s) not joined yet (no agent): {', '.join(pending)}")
    if not joined:
        raise UsageError("no joined server matches the targets")
    return joined, skipped
