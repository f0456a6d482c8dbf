"""The pytest plugin skips with the reason (or fails when hosts are required) and marks tests."""

import pytest

from kernel.testbed import pytest_plugin


def test_factories_skip_with_the_reason(light_hosts, monkeypatch):
    monkeypatch.setattr(pytest_plugin, "unsupported_reason", lambda mode: "no netns here")
    monkeypatch.delenv("KERNEL_TESTBED_REQUIRED", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no light test hosts: no netns here"):
        light_hosts(1)


def test_factories_fail_when_hosts_are_required(full_hosts, monkeypatch):
    monkeypatch.setattr(pytest_plugin, "unsupported_reason", lambda mode: "not root")
    monkeypatch.setenv("KERNEL_TESTBED_REQUIRED", "1")
    with pytest.raises(pytest.fail.Exception, match="required but unavailable: not root"):
        full_hosts(1)


def test_tests_using_the_fixtures_get_the_testbed_marker(request, testbed_factory):
    assert request.node.get_closest_marker("testbed") is not None
