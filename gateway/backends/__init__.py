"""Backends: one module per kind, and the registry that lists the kinds (registry.py)."""
