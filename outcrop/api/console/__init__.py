"""The console: the web face of every capability, under /console (see app.py for how it is built)."""

from outcrop.api.console.app import ConsoleApp

__all__ = ["ConsoleApp"]
