"""Bad input to `kernel-testbed` gets a clear message, never a traceback."""

import pytest

from kernel.testbed import cli


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["up"],
        ["up", "abc"],
        ["up", "0"],
        ["up", "-3"],
        ["up", "99999"],
        ["up", "2", "--bogus"],
        ["list", "extra"],
    ],
)
def test_bad_arguments_exit_2_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "usage: kernel-testbed" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("prefix", ["nope", "kt12", "ktzzzz", "../../etc", "kt0000; rm -rf /"])
def test_down_of_an_unknown_bed_is_a_clear_error(prefix, capsys):
    assert cli.main(["down", prefix]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kernel-testbed: error: ")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "kt0000-h001", "true"],
        ["run", "nohost", "true"],
        ["run", "kt0000-h001"],
        ["run", "kt0000-h001", "--"],
        ["run", "../x", "--", "true"],
    ],
)
def test_run_in_an_unknown_host_is_a_clear_error(argv, capsys):
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("kernel-testbed: error: ")
    assert "Traceback" not in err
