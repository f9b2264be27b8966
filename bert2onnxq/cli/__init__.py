"""Command line: parse, call, print. No logic worth testing lives here; one module per command."""

from . import bench, convert, export, inspect, sensitivity, sweep, validate  # noqa: F401  (each registers its command on `main`)
from .app import main

__all__ = ["main"]
