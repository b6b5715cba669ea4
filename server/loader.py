"""Finds the app's socket class from ``module:attribute``, as uvicorn finds an app."""

from __future__ import annotations

import importlib
import os
import sys

from switchboard.server.socket import Socket


class LoadError(Exception):
    """The socket class named on the command line cannot be used; the message says why."""


def load_socket(spec: str, directory: str | None = None) -> type[Socket]:
    """Import ``module:Attribute`` (from ``directory``, default the current one) and check
    that it is a :class:`Socket` subclass."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise LoadError(f"expected module:SocketClass (like chat:ChatSocket), got {spec!r}")
    directory = os.path.abspath(directory or os.getcwd())
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise  # the module exists but one of its own imports is missing: show it whole
        raise LoadError(f"no module named {module_name!r} in {directory}") from None
    target: object = module
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise LoadError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not (isinstance(target, type) and issubclass(target, Socket)):
        raise LoadError(f"{spec} is {target!r}, not a subclass of switchboard.Socket")
    return target
