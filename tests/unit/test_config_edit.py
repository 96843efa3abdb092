"""`banger config edit`: $EDITOR on a private draft; only a valid edit replaces config.toml."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

#: A stand-in editor: each run writes the next queued content into the file it is given and logs its argv.
EDITOR = """
import json, sys
from pathlib import Path
state = Path(sys.argv[1])
queue = json.loads(state.read_text())
log = state.with_suffix(".log")
log.write_text(log.read_text() + json.dumps(sys.argv[2:]) + "\\n" if log.exists() else json.dumps(sys.argv[2:]) + "\\n")
content = queue.pop(0)
state.write_text(json.dumps(queue))
if content is None:
    sys.exit(3)
Path(sys.argv[-1]).write_text(content)
"""


class Editor:
    def __init__(self, tmp_path: Path, *contents: str | None) -> None:
        self.script = tmp_path / "editor.py"
        self.script.write_text(EDITOR)
        self.state = tmp_path / "editor-queue.json"
        self.state.write_text(json.dumps(list(contents)))

    @property
    def command(self) -> str:
        return f"{sys.executable} {self.script} {self.state}"

    def calls(self) -> list[list[str]]:
        log = self.state.with_suffix(".log")
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def config_path(env: dict[str, str]) -> Path:
    return Path(env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"


def edit(env: dict[str, str], editor: Editor, answers: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "banger", "config", "edit"],
        env={**env, "EDITOR": editor.command},
        input=answers,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_valid_edit_replaces_the_file(banger_env: dict[str, str], tmp_path: Path) -> None:
    path = config_path(banger_env)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("default_image = 'old'\n")
    path.chmod(0o640)
    editor = Editor(tmp_path, "default_image = 'new'\n")
    result = edit(banger_env, editor)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "saved ~/.config/banger/config.toml: a running daemon applies it from its next request\n"
    assert path.read_text() == "default_image = 'new'\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    # The editor got a draft beside the file, never the file itself, and no draft is left.
    (draft,) = editor.calls()
    assert Path(draft[0]).parent == path.parent and Path(draft[0]) != path
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.toml"]


def test_a_new_file_starts_from_a_commented_template(banger_env: dict[str, str], tmp_path: Path) -> None:
    editor = Editor(tmp_path, "[vm_defaults]\nvcpu = 2\n")
    assert edit(banger_env, editor).returncode == 0
    path = config_path(banger_env)
    assert path.read_text() == "[vm_defaults]\nvcpu = 2\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_unchanged_template_writes_nothing(banger_env: dict[str, str], tmp_path: Path) -> None:
    from banger_core.cli.config_cmd import NEW_FILE

    result = edit(banger_env, Editor(tmp_path, NEW_FILE))
    assert result.returncode == 0 and result.stdout == "~/.config/banger/config.toml: no changes\n"
    assert not config_path(banger_env).exists()


def test_an_invalid_edit_offers_to_edit_again_and_declining_keeps_the_old_file(
    banger_env: dict[str, str], tmp_path: Path
) -> None:
    path = config_path(banger_env)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("default_image = 'old'\n")
    editor = Editor(tmp_path, "colour = 'blue'\n")
    result = edit(banger_env, editor, answers="n\n")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "banger: error: ~/.config/banger/config.toml: unknown key 'colour': remove it or check its spelling",
        "Edit again? [Y/n]: ",
        "banger: error: ~/.config/banger/config.toml left as it was; your edit is in "
        "~/.config/banger/config.toml.rejected",
    ]
    assert path.read_text() == "default_image = 'old'\n"
    assert (path.parent / "config.toml.rejected").read_text() == "colour = 'blue'\n"
    assert len(editor.calls()) == 1


def test_editing_again_until_it_validates(banger_env: dict[str, str], tmp_path: Path) -> None:
    editor = Editor(tmp_path, "ssh_key_path = 'relative/key'\n", "ssh_key_path = '~/.ssh/id_banger'\n")
    result = edit(banger_env, editor, answers="y\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == (
        "banger: error: ~/.config/banger/config.toml: key 'ssh_key_path' must be an absolute path "
        "(or start with ~/), got 'relative/key'"
    )
    assert config_path(banger_env).read_text() == "ssh_key_path = '~/.ssh/id_banger'\n"
    first, second = editor.calls()
    assert first == second  # the same draft, with the rejected text still in it to fix


def test_no_answer_keeps_the_old_file(banger_env: dict[str, str], tmp_path: Path) -> None:
    path = config_path(banger_env)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("default_image = 'old'\n")
    result = edit(banger_env, Editor(tmp_path, "default_image = ["))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert path.read_text() == "default_image = 'old'\n"


def test_an_editor_that_fails_changes_nothing(banger_env: dict[str, str], tmp_path: Path) -> None:
    path = config_path(banger_env)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("default_image = 'old'\n")
    result = edit(banger_env, Editor(tmp_path, None))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"banger: error: the editor {sys.executable!r} exited with status 3: ~/.config/banger/config.toml "
        "left as it was"
    )
    assert path.read_text() == "default_image = 'old'\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.toml"]


def test_a_symlinked_config_stays_a_link(banger_env: dict[str, str], tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "banger.toml"
    real.parent.mkdir()
    real.write_text("default_image = 'old'\n")
    path = config_path(banger_env)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(real)
    assert edit(banger_env, Editor(tmp_path, "default_image = 'new'\n")).returncode == 0
    assert path.is_symlink() and real.read_text() == "default_image = 'new'\n"


@pytest.mark.parametrize(
    ("editor", "message"),
    [
        (
            "vim 'unclosed",
            'banger: error: EDITOR="vim \'unclosed" is not a command line (No closing quotation): fix EDITOR',
        ),
        (
            "/nonexistent/editor --wait",
            "banger: error: cannot run the editor '/nonexistent/editor': No such file or directory: fix EDITOR",
        ),
    ],
)
def test_a_bad_editor_is_a_one_line_error(banger_env: dict[str, str], editor: str, message: str) -> None:
    result = subprocess.run(
        [BIN / "banger", "config", "edit"],
        env={**banger_env, "EDITOR": editor},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and result.stderr.strip() == message
    assert not config_path(banger_env).exists()
    assert not any(config_path(banger_env).parent.glob(".config.toml.*"))


def test_without_editor_or_fallback_it_says_what_to_set(banger_env: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in banger_env.items() if k != "EDITOR"}
    env["PATH"] = str(tmp_path / "empty")
    result = subprocess.run([BIN / "banger", "config", "edit"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "banger: error: no editor: set EDITOR (none of sensible-editor, editor, nano, vi is installed)"
    )
