"""The two commands the syncer runs in the guest.

Both are fixed ``sh -c`` scripts; every value (the guest directory, the
manifest name) is passed as a positional argument, never pasted into the
script, and the core's :class:`~banger_hookspecs.GuestShell` quotes each argv
element. They need only ``sh``, ``tar``, ``head``, ``xargs``, ``rm`` and
``rmdir``; the incremental query also uses GNU ``find`` when it is there.
"""

from __future__ import annotations

from banger_git.entries import MANIFEST_NAME

#: stdin: ``<N>\n`` + N bytes of NUL-separated paths to delete + a tar stream.
#: Deleting first lets a path change from file to directory (or back).
#: Emptied parent directories of deleted files are removed too.
SYNC_SCRIPT = r"""set -e
mkdir -p -- "$1"
cd -- "$1"
IFS= read -r count
case $count in ''|*[!0-9]*) echo "banger: malformed sync stream" >&2; exit 90;; esac
if [ "$count" -gt 0 ]; then
  head -c "$count" | xargs -0 -r sh -c '
    for p do
      rm -f -- "$p" 2>/dev/null || :
      while case $p in */*) true;; *) false;; esac; do
        p=${p%/*}
        rmdir -- "$p" 2>/dev/null || break
      done
    done' banger-delete
fi
exec tar -x -p -o -f -
"""

#: stdin: NUL-separated ``./path`` entries of the plan.
#: stdout: ``absent\n``, or ``present\n`` + ``<N>\n`` + N manifest bytes +
#: ``stat\n`` + NUL-separated find records (path, type, mode, size, mtime,
#: link target) of the planned paths the guest has, or ``nostat\n``.
QUERY_SCRIPT = r"""if ! cd -- "$1" 2>/dev/null; then cat >/dev/null; echo absent; exit 0; fi
echo present
if [ -f "$2" ] && [ ! -L "$2" ]; then wc -c < "$2" | tr -d ' '; cat -- "$2"; else echo 0; fi
if [ "$(find . -maxdepth 0 -printf ok 2>/dev/null)" = ok ]; then
  echo stat
  xargs -0 -r sh -c 'find "$@" -prune -printf "%p\0%y\0%m\0%s\0%T@\0%l\0" 2>/dev/null; exit 0' banger-stat
else
  cat >/dev/null
  echo nostat
fi
"""


def sync_argv(guest_path: str) -> list[str]:
    """argv that receives a sync stream into ``guest_path``."""
    return ["sh", "-c", SYNC_SCRIPT, "banger-sync", guest_path]


def query_argv(guest_path: str) -> list[str]:
    """argv that describes what ``guest_path`` holds."""
    return ["sh", "-c", QUERY_SCRIPT, "banger-query", guest_path, MANIFEST_NAME]
