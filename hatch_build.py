"""Stamp wheels with version, commit and build time (read by banger_core/common/buildinfo.py).

The version is, in order: ``$BANGER_RELEASE_VERSION`` when set (``scripts/release``
sets it: the release being cut, ``vMAJOR.MINOR.PATCH``, refused in any other
form), the git tag on HEAD when it is one (``v0.2.0``), else ``dev``: only
release builds are compared by ``banger doctor``'s version row.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

#: The one version form a release has (what ``banger update`` compares and names directories after).
RELEASE_VERSION = re.compile(r"v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def release_version() -> str:
    """The version to stamp: the release override, the tag on HEAD, or ``dev``."""
    override = os.environ.get("BANGER_RELEASE_VERSION")
    if override is not None:
        if RELEASE_VERSION.fullmatch(override) is None:
            raise ValueError(
                f"BANGER_RELEASE_VERSION={override!r} is not a release version: use vMAJOR.MINOR.PATCH, e.g. v0.2.0"
            )
        return override
    tag = _git("describe", "--tags", "--exact-match", "HEAD")
    return tag if tag and tag.startswith("v") else "dev"


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return  # development checkouts read .git at run time
        commit = _git("rev-parse", "HEAD") or "unknown"
        # SOURCE_DATE_EPOCH (reproducible-builds.org): a rebuild of the same commit stamps the same time.
        epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
        built = datetime.fromtimestamp(int(epoch), UTC) if epoch.isdigit() else datetime.now(UTC)
        info = {
            "version": release_version(),
            "commit": commit,
            "built": built.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        out = Path(tempfile.mkdtemp()) / "_build_info.py"
        out.write_text("".join(f"{key.upper()} = {value!r}\n" for key, value in info.items()))
        build_data["force_include"][str(out)] = "banger_core/_build_info.py"
