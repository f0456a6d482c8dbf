pytest_plugins = ["kernel.testbed.pytest_plugin"]
