"""Builders of every weight file the package ships (one module per method)."""
