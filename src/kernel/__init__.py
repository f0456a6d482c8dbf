"""Kernel: a cluster management system — an agent on every server, one server to run them."""

__version__ = "0.1.0"
