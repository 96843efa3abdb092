"""The ``banger`` command line.

``main`` answers ``banger --version`` before importing click or any plugin:
it is the most frequently scripted call and must cost about one interpreter start.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from banger_core.common.buildinfo import build_info

        print(build_info().line("banger"))
        return
    from banger_core.cli.app import run

    run()
