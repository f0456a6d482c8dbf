"""Generated bad (and good) input for every services/status operation of the OpenAPI
document: never a 500, errors always ``{"error", "message"}``."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
import schemathesis
from schemathesis import GenerationMode

from kernel.server.core.datadir import install_examples
from support.api import check_operation, make_token

from .conftest import add_server, close_app, make_app

pytestmark = pytest.mark.slow
EXAMPLES = 30
# The services and status operations, here with example services and a server to act on.
OURS = re.compile(
    r"^/api/v1/(services|status)|^/api/v1/servers/\{server_id\}/(status|services|metrics)"
)


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    data = tmp_path_factory.mktemp("fuzz") / "data"
    install_examples(data, test_only=True)
    app = make_app(data)
    add_server(app, "h1", "http://127.0.0.1:9", "ab" * 32)  # never contacted: runner is off
    yield app, make_token(app, "fuzzer", "admin")
    close_app(app)


def _operations():
    with tempfile.TemporaryDirectory(prefix="kernel-status-fuzz-") as tmp:
        app = make_app(Path(tmp) / "data")
        schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
        ops = [r.ok() for r in schema.get_all_operations()]
        close_app(app)
    return [
        pytest.param(op.method.upper(), op.path, id=f"{op.method.upper()} {op.path}")
        for op in ops
        if OURS.match(op.path) and op.path != "/api/v1/status/events"  # endless: own tests
    ]


@pytest.mark.parametrize("mode", [GenerationMode.NEGATIVE, GenerationMode.POSITIVE])
@pytest.mark.parametrize(("method", "path"), _operations())
def test_operation_never_answers_500(fuzz_app, method, path, mode):
    app, token = fuzz_app
    check_operation(app, token, method, path, mode, EXAMPLES)
