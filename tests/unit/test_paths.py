"""Paths: one rule for ``~`` (CLI and daemon agree), private dirs created, never chmod-ed."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from banger_core.common import locate, paths
from banger_core.common.config import ConfigError, load_config
from banger_core.common.errors import BangerError
from banger_core.common.plugins import get_plugin_manager
from banger_core.daemon.layout import Layout


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("~", "/home/ada"), ("~/", "/home/ada"), ("~/x", "/home/ada/x"), ("~//x", "/home/ada/x"), ("/srv/b", "/srv/b")],
)
def test_expand_path(value: str, expected: str) -> None:
    assert paths.expand_path(value, {"HOME": "/home/ada"}) == Path(expected)


@pytest.mark.parametrize("value", ["relative", "./x", "~ada/x", "~x"])
def test_expand_path_rejects(value: str) -> None:
    with pytest.raises(ValueError, match=r"^must be an absolute path \(or start with ~/\), got "):
        paths.expand_path(value, {"HOME": "/home/ada"})


@pytest.mark.parametrize("value", ["~/x", "~", "~//y", "/abs/run", "/abs//run/./x/", "relative"])
def test_client_and_daemon_agree_on_the_socket(banger_env: dict[str, str], value: str) -> None:
    config = Path(banger_env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    config.write_text(f'runtime_dir = "{value}"\nstate_dir = "{value}"\n')
    client_socket, client_state = paths.socket_path(banger_env), paths.state_dir(banger_env)
    try:
        loaded = load_config(get_plugin_manager(banger_env), banger_env)
    except ConfigError as err:  # the daemon refuses what the client could not expand (and uses no default)
        assert value == "relative" and "must be an absolute path" in str(err)
        assert client_socket == paths.default_runtime_dir(banger_env) / "bangerd.sock"
        return
    layout = Layout(loaded["state_dir"], loaded["runtime_dir"])
    assert layout.socket == client_socket and layout.state_dir == client_state
    # The CLI's fast path connects to the string form: the same text the daemon binds.
    assert locate.socket_file(banger_env) == str(layout.socket)


def test_missing_private_dir_is_created_0700(tmp_path: Path) -> None:
    made = paths.ensure_private_dir(tmp_path / "a" / "run", "runtime_dir")
    assert made.is_dir() and mode(made) == 0o700


def test_shared_dir_is_refused_and_left_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    with pytest.raises(BangerError) as err:
        paths.ensure_private_dir(shared, "runtime_dir")
    assert str(err.value) == (
        f"{shared} is not a private directory (mode 1777, open to other users) and banger will not change an "
        "existing directory's permissions: set runtime_dir in config.toml to a path that does not exist yet "
        "(banger creates it with mode 0700)"
    )
    assert mode(shared) == 0o1777


def test_a_file_in_the_way_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    with pytest.raises(BangerError) as err:
        paths.ensure_private_dir(blocker / "run", "runtime_dir")
    assert str(err.value) == (
        f"cannot create {blocker / 'run'} (Not a directory): "
        "set runtime_dir in config.toml to a directory you can create"
    )


def test_a_config_file_that_is_not_utf8_leaves_the_cli_on_the_defaults(banger_env: dict[str, str]) -> None:
    config = Path(banger_env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    config.write_bytes(b"runtime_dir = '\xff'\n")
    assert paths.runtime_dir(banger_env) == paths.default_runtime_dir(banger_env)  # the daemon reports the file


@pytest.mark.parametrize(
    "spelling",
    [
        'runtime_dir = "/srv/r"',
        '"runtime_dir" = "/srv/r"',
        "'runtime_dir' = '/srv/r'",
        '"runtime\\u005fdir" = "/srv/r"',
    ],
)
def test_every_toml_spelling_of_runtime_dir_is_read(banger_env: dict[str, str], spelling: str) -> None:
    config = Path(banger_env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    config.write_text(f'default_image = "x"\n{spelling}\n')
    assert paths.runtime_dir(banger_env) == Path("/srv/r")


def test_a_config_without_the_key_is_not_parsed(banger_env: dict[str, str]) -> None:
    """tomllib's import is the most costly part of `banger vm list`'s socket lookup: skipped when it cannot matter."""
    config = Path(banger_env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    config.write_text('default_image = "x"\n[vm_defaults]\nvcpus = 2\n')
    probe = "import sys; from banger_core.common import paths; print(paths.runtime_dir(), 'tomllib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], env=banger_env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(paths.default_runtime_dir(banger_env)), "False"]
