pytest_plugins = ["kernel.testbed.pytest_plugin", "support.fixtures"]
