"""Version, commit and build time, for ``--version`` and ``banger version``.

A release wheel carries ``_build_info.py`` (written by ``hatch_build.py``).
A development checkout has none; then the commit is read from the ``.git``
directory beside the package. This module runs on every ``banger --version``,
so it uses plain file reads and ``os.path`` only: no ``git`` subprocess, no
pathlib, json or dataclasses (together they tripled the start-up time).
"""

from __future__ import annotations

import os
from typing import NamedTuple

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNKNOWN = "unknown"


class BuildInfo(NamedTuple):
    """What a build knows about itself."""

    version: str
    commit: str
    built: str

    @property
    def short_commit(self) -> str:
        return self.commit[:8] if self.commit != UNKNOWN else UNKNOWN

    def line(self, program: str) -> str:
        """``banger v0.1.0 (commit abcd1234, built 2026-04-28T20:45:50Z)``."""
        return f"{program} {self.version} (commit {self.short_commit}, built {self.built})"


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _git_dir(root: str) -> str | None:
    dot_git = os.path.join(root, ".git")
    if os.path.isdir(dot_git):
        return dot_git
    text = _read(dot_git)  # a worktree: "gitdir: /path"
    if text and text.startswith("gitdir:"):
        return os.path.normpath(os.path.join(root, text.split(":", 1)[1].strip()))
    return None


def _read_ref(git_dir: str, ref: str) -> str | None:
    commondir = _read(os.path.join(git_dir, "commondir"))
    common = os.path.normpath(os.path.join(git_dir, commondir)) if commondir else git_dir
    for base in (git_dir, common):
        value = _read(os.path.join(base, ref))
        if value:
            return value
    packed = _read(os.path.join(common, "packed-refs")) or ""
    for line in packed.splitlines():
        sha, _, name = line.partition(" ")
        if name == ref:
            return sha
    return None


def commit_from_checkout(root: str) -> str | None:
    """The commit HEAD points at in the git checkout at ``root``, if any."""
    git_dir = _git_dir(root)
    head = _read(os.path.join(git_dir, "HEAD")) if git_dir else None
    if not git_dir or not head:
        return None
    if head.startswith("ref:"):
        return _read_ref(git_dir, head[4:].strip())
    return head


def build_info() -> BuildInfo:
    """The running build's version data."""
    try:
        from banger_core import _build_info  # type: ignore[attr-defined]
    except ImportError:
        commit = commit_from_checkout(os.path.dirname(_PACKAGE_DIR))
        return BuildInfo(version="dev", commit=commit or UNKNOWN, built=UNKNOWN)
    return BuildInfo(version=_build_info.VERSION, commit=_build_info.COMMIT, built=_build_info.BUILT)
