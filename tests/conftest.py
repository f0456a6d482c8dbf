import signal

pytest_plugins = ["kernel.testbed.pytest_plugin", "support.fixtures"]

# A shell without job control starts background commands with SIGINT ignored, and children
# inherit that: the tests that press Ctrl-C on a `kernel` or testbed process would see it
# ignored. A handler (not an ignore) is reset to the default in every child at exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
