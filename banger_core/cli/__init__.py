"""The ``banger`` command line.

``main`` answers ``banger --version`` and a bare ``banger vm list`` before
importing click or any plugin: the most frequently typed and scripted calls
cost about one and two interpreter starts (docs/performance.md).
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from banger_core.common.buildinfo import build_info

        print(build_info().line("banger"))
        return
    if sys.argv[1:] == ["vm", "list"]:
        from banger_core.cli.vm_list import answer

        sys.exit(answer())
    from banger_core.cli.app import run

    run()
