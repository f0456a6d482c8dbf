"""Generated bad (and good) input for every operation of /api/v1/openapi.json: never a 500,
errors always ``{"error", "message"}``. Bounded: a few examples per operation and mode."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from kernel.server.app import create_app
from kernel.server.components import components
from support.api import check_operation, make_token
from support.servers import app_config

pytestmark = pytest.mark.slow
EXAMPLES = 30
# Event streams stay open (a job's until it ends, the status stream for ever); they have their
# own tests. "Send a test" sends to whatever URL a generated channel holds (tests/alerts sends
# to a loopback sink): generated input must never make traffic leave this machine.
SKIP = {
    ("GET", "/api/v1/jobs/{job_id}/events"),
    ("GET", "/api/v1/status/events"),
    ("POST", "/api/v1/alerts/channels/{channel_id}/test"),
}


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    app = create_app(app_config(tmp, f"sqlite:///{tmp / 'kernel.db'}"))
    token = make_token(app, "fuzzer", "admin")
    yield app, token
    components(app).db.dispose()


def _operations():
    app = create_app(app_config(_Tmp.path(), f"sqlite:///{_Tmp.path() / 'ops.db'}"))
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    ops = [r.ok() for r in schema.get_all_operations()]
    components(app).db.dispose()
    return [
        pytest.param(op.method.upper(), op.path, id=f"{op.method.upper()} {op.path}")
        for op in ops
        if (op.method.upper(), op.path) not in SKIP
    ]


class _Tmp:
    _dir = None

    @classmethod
    def path(cls):
        import tempfile
        from pathlib import Path

        if cls._dir is None:
            cls._dir = tempfile.TemporaryDirectory(prefix="kernel-fuzz-ops-")
        return Path(cls._dir.name)


@pytest.mark.parametrize("mode", [GenerationMode.NEGATIVE, GenerationMode.POSITIVE])
@pytest.mark.parametrize(("method", "path"), _operations())
def test_operation_never_answers_500(fuzz_app, method, path, mode):
    app, token = fuzz_app
    try:
        check_operation(app, token, method, path, mode, EXAMPLES)
    except Unsatisfiable:
        pytest.skip("no input to make invalid")
