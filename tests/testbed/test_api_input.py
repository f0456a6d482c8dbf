"""Bad arguments to the Python API are clear errors, raised before anything is made."""

import pytest

from kernel.exceptions import TestbedError
from kernel.testbed import Testbed


@pytest.mark.parametrize("n", [-1, 1.5, "3", None])
def test_bad_host_counts(n):
    with pytest.raises(TestbedError, match="whole number"):
        Testbed(n)


@pytest.mark.parametrize("mode", ["heavy", "", "FULL", None])
def test_bad_modes(mode):
    with pytest.raises(TestbedError, match="unknown host mode"):
        Testbed(1, mode)


def test_a_bed_that_is_not_up_says_so():
    bed = Testbed(1)
    with pytest.raises(TestbedError, match="not up"):
        _ = bed.gateway_ip
    bed.down()  # nothing to do, no error


@pytest.mark.parametrize("prefix", ["../../etc", "kt12", "", "ktZZZZ"])
def test_attach_refuses_names_that_are_not_beds(prefix):
    with pytest.raises(TestbedError, match="not a testbed name"):
        Testbed.attach(prefix)
