"""Kernel server: the Flask app and its areas (one module per area)."""
