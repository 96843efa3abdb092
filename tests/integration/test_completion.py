"""Shell completion through the real shells: bash runs the generated script, zsh and fish check its syntax."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from banger_core.cli.completion import query_names
from banger_core.testing import FakeSite
from tests.support.daemon import DaemonHarness

BIN = Path(sys.executable).parent

#: Loads the script ``banger completion bash`` prints, shows what it registered, then completes the
#: words given as arguments (the last one is the word being typed) the way bash does on Tab.
BASH_DRIVER = """
source <(banger completion bash)
complete -p banger
COMP_WORDS=("$@")
COMP_CWORD=$(( $# - 1 ))
_banger_completion banger
printf '%s\\n' "${COMPREPLY[@]}"
"""


def shell_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "PATH": f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}"}


def bash_complete(env: dict[str, str], *words: str) -> list[str]:
    """COMPREPLY for ``words`` through bash; asserts completion printed nothing on the terminal."""
    result = subprocess.run(
        ["bash", "-c", BASH_DRIVER, "bash", *words],
        env=shell_env(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    registered, *replies = result.stdout.splitlines()
    assert registered == "complete -o nosort -F _banger_completion banger"
    assert result.stderr == ""
    return sorted(reply for reply in replies if reply)


def fish_complete(env: dict[str, str], line: str) -> list[str]:
    """What fish offers for ``line`` (its own ``complete -C``), names only, with the script loaded."""
    result = subprocess.run(
        ["fish", "-c", "banger completion fish | source; complete -C $argv[1]", line],
        env=shell_env(env),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stderr == ""
    return sorted(entry.split("\t", 1)[0] for entry in result.stdout.splitlines())


def test_bash_completes_commands_flags_and_live_names(daemon: DaemonHarness) -> None:
    client = daemon.client()
    client.images.pull("fake-tiny")
    for name in ("alpha", "beta"):
        client.vms.create(name=name, backend="fakevmm", start=False)
    kernels = sorted(k.ref for k in client.kernels.list())
    assert kernels

    assert bash_complete(daemon.env, "banger", "co") == ["completion", "config"]
    assert bash_complete(daemon.env, "banger", "vm", "s") == ["session", "show", "ssh", "start", "stop"]
    assert bash_complete(daemon.env, "banger", "vm", "create", "--ba") == ["--backend"]
    assert bash_complete(daemon.env, "banger", "vm", "show", "") == ["alpha", "beta"]
    assert bash_complete(daemon.env, "banger", "vm", "delete", "alpha", "b") == ["beta"]
    assert bash_complete(daemon.env, "banger", "vm", "workspace", "diff", "al") == ["alpha"]
    assert bash_complete(daemon.env, "banger", "vm", "create", "--image", "") == ["fake-tiny"]
    assert bash_complete(daemon.env, "banger", "image", "delete", "fake") == ["fake-tiny"]
    assert bash_complete(daemon.env, "banger", "kernel", "delete", "") == kernels
    # Plugin-provided names: the fake plugin's backend next to the builtin ones.
    assert "fakevmm" in bash_complete(daemon.env, "banger", "vm", "run", "--backend", "")
    assert bash_complete(daemon.env, "banger", "vm", "create", "--backend", "fake") == ["fakevmm"]
    assert bash_complete(daemon.env, "banger", "image", "pull", "--source", "fa") == ["fake"]
    # fish runs the same completion through its own script (zsh's is checked for syntax below).
    assert fish_complete(daemon.env, "banger vm show ") == ["alpha", "beta"]
    assert fish_complete(daemon.env, "banger vm create --image f") == ["fake-tiny"]
    assert fish_complete(daemon.env, "banger vm s") == ["session", "show", "ssh", "start", "stop"]


def test_with_no_daemon_names_complete_to_nothing_and_no_daemon_starts(daemon: DaemonHarness) -> None:
    assert bash_complete(daemon.env, "banger", "vm", "show", "") == []
    assert bash_complete(daemon.env, "banger", "vm", "create", "--image", "") == []
    assert bash_complete(daemon.env, "banger", "kernel", "export", "") == []
    # Commands and flags need no daemon.
    assert bash_complete(daemon.env, "banger", "vm", "st") == ["start", "stop"]
    assert fish_complete(daemon.env, "banger image delete ") == []
    assert daemon.pid() is None
    assert not (daemon.runtime / "bangerd.sock").exists()
    assert not (daemon.state / "bangerd.start.lock").exists()


def test_a_daemon_that_does_not_answer_completes_to_nothing(tmp_path: Path) -> None:
    """A wedged daemon (accepts, never answers) must cost the timeout, not hang the shell."""
    runtime = tmp_path / "banger"
    runtime.mkdir(mode=0o700)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(runtime / "bangerd.sock"))
    listener.listen(1)
    accepted: list[socket.socket] = []
    acceptor = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    acceptor.start()
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_RUNTIME_DIR": str(tmp_path)}
    try:
        assert query_names(env, "vm", timeout=0.2) == []
    finally:
        acceptor.join(5)
        for conn in accepted:
            conn.close()
        listener.close()
    assert accepted, "the request never reached the socket"


#: Each shell's own syntax check of a script file.
SYNTAX_CHECKS = {"zsh": ["zsh", "-n"], "fish": ["fish", "-n"]}


@pytest.mark.parametrize("shell", sorted(SYNTAX_CHECKS))
def test_zsh_and_fish_scripts_are_valid(banger_env: dict[str, str], tmp_path: Path, shell: str) -> None:
    script = subprocess.run(
        [BIN / "banger", "completion", shell], env=banger_env, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "_BANGER_COMPLETE" in script
    path = tmp_path / f"banger.{shell}"
    path.write_text(script)
    subprocess.run([*SYNTAX_CHECKS[shell], str(path)], check=True, timeout=60)


def test_completion_help_shows_each_shells_recipe(banger_env: dict[str, str]) -> None:
    out = subprocess.run(
        [BIN / "banger", "completion", "--help"], env=banger_env, capture_output=True, text=True, check=True
    ).stdout
    assert 'eval "$(banger completion bash)"' in out
    assert 'eval "$(banger completion zsh)"' in out
    assert "banger completion fish > ~/.config/fish/completions/banger.fish" in out


def test_an_unknown_shell_is_a_usage_error(banger_env: dict[str, str]) -> None:
    result = subprocess.run([BIN / "banger", "completion", "tcsh"], env=banger_env, capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert "'tcsh' is not one of 'bash', 'fish', 'zsh'" in result.stderr


def test_a_broken_plugin_does_not_print_on_tab(banger_site: FakeSite, banger_env: dict[str, str]) -> None:
    """Load failures are for commands to report: on Tab they would land in the middle of the command line."""
    banger_site.add_plugin("broken", "broken-banger", "0.9", source="import no_such_module_anywhere\n")
    env = {**banger_env, "PYTHONPATH": str(banger_site.root)}
    assert bash_complete(env, "banger", "vm", "create", "--backend", "q") == ["qemu"]
    assert bash_complete(env, "banger", "co") == ["completion", "config"]
    # A command still reports it.
    listing = subprocess.run([BIN / "banger", "plugins", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert "Error while loading banger plugin broken" in listing.stderr


def test_completing_names_imports_no_http_client_library(daemon: DaemonHarness) -> None:
    """Every Tab press pays the imports: names come over the stdlib transport, never through httpx."""
    daemon.client().images.pull("fake-tiny")
    probe = (
        "import sys\n"
        "from banger_core.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('httpx' in sys.modules, file=sys.stderr)\n"
    )
    env = {**daemon.env, "_BANGER_COMPLETE": "bash_complete", "COMP_WORDS": "banger image delete ", "COMP_CWORD": "3"}
    result = subprocess.run(
        [sys.executable, "-c", probe, "banger"], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == "plain,fake-tiny\n" and result.stderr == "False\n"


def test_zsh_registers_its_completion_function(banger_env: dict[str, str]) -> None:
    script = 'autoload -U compinit; compinit -u -D; eval "$(banger completion zsh)"; print -r -- $_comps[banger]'
    result = subprocess.run(
        ["zsh", "-f", "-c", script], env=shell_env(banger_env), capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == "_banger_completion\n" and result.stderr == ""
