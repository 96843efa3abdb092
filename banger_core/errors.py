"""Exceptions whose message is a user sentence; the CLI prints them as one line."""

from __future__ import annotations


class BangerError(Exception):
    """Base for errors the user can act on. ``str(exc)`` says what and how to fix it."""

    exit_code = 1
