"""config.toml: typed keys, one-line errors naming file/key/expectation, provenance."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from banger_core.common.config import (
    ALIASES,
    MAX_SIZE,
    ConfigError,
    file_stamp,
    format_size,
    load_config,
    parse_size,
    type_text,
)
from banger_core.common.plugins import get_plugin_manager
from banger_core.testing import invoke_cli


def write_config(env: dict[str, str], text: str) -> Path:
    path = Path(env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(env: dict[str, str]):  # type: ignore[no-untyped-def]
    return load_config(get_plugin_manager(env), env)


def test_missing_file_means_defaults(banger_env: dict[str, str]) -> None:
    config = load(banger_env)
    assert config["default_image"] == "debian-bookworm" and config.sources["default_image"] == "default"
    assert config["state_dir"] == Path(banger_env["XDG_DATA_HOME"]) / "banger"
    assert config.sources["state_dir"] == "default (XDG_DATA_HOME)"
    assert "default_kernel" not in config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 1", "~/.config/banger/config.toml: unknown key 'colour': remove it or check its spelling"),
        ("vmm_backend = 3", "~/.config/banger/config.toml: key 'vmm_backend' must be a string, got 3"),
        pytest.param(
            "use_jailer = 'yes'",
            "~/.config/banger/config.toml: key 'use_jailer' must be true or false, got 'yes'",
            marks=pytest.mark.builtins,
        ),
        (
            "state_dir = 'relative/dir'",
            "~/.config/banger/config.toml: key 'state_dir' must be an absolute path (or start with ~/), "
            "got 'relative/dir'",
        ),
        pytest.param(
            "qemu_machine = 'pc'",
            "~/.config/banger/config.toml: key 'qemu_machine' must be one of microvm, q35, got 'pc'",
            marks=pytest.mark.builtins,
        ),
        (
            "[vm_defaults]\nvcpu = 'four'",
            "~/.config/banger/config.toml: key 'vm_defaults': key 'vcpu' must be an integer, got 'four'",
        ),
        (
            "[vm_defaults]\ncpus = 4",
            "~/.config/banger/config.toml: key 'vm_defaults': unknown key 'cpus' (known: disk_size, memory_mib, vcpu)",
        ),
        (
            "[vm_defaults]\ndisk_size = 'huge'",
            "~/.config/banger/config.toml: key 'vm_defaults': key 'disk_size' must be a size like 8G or 512M, "
            "got 'huge'",
        ),
        (
            "[[file_sync]]\nhost = '~/.gitconfig'",
            "~/.config/banger/config.toml: key 'file_sync' entry 1: missing required key 'guest'",
        ),
        (
            "file_sync = 'x'",
            "~/.config/banger/config.toml: key 'file_sync' must be an array of tables ([[...]]), got 'x'",
        ),
        ("default_image = [", "~/.config/banger/config.toml: invalid TOML: "),
        (
            "ssh_key_path = 'keys/id_banger'",
            "~/.config/banger/config.toml: key 'ssh_key_path' must be an absolute path (or start with ~/), "
            "got 'keys/id_banger'",
        ),
        (
            "default_image = 'a'\ndefault_image_name = 'b'",
            "~/.config/banger/config.toml: default_image_name = 'b' and default_image = 'a' set the same key "
            "(default_image_name is another name for default_image): keep one",
        ),
        ("default_image_name = 3", "~/.config/banger/config.toml: key 'default_image' must be a string, got 3"),
    ],
)
def test_bad_values_are_one_line_errors(banger_env: dict[str, str], text: str, message: str) -> None:
    write_config(banger_env, text)
    with pytest.raises(ConfigError) as err:
        load(banger_env)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)
    result = invoke_cli(["config", "show"], banger_env)
    assert result.exit_code == 1 and result.stderr.startswith(f"banger: error: {message}")


def test_a_file_that_is_not_utf8_is_a_one_line_error(banger_env: dict[str, str]) -> None:
    path = write_config(banger_env, "")
    path.write_bytes(b"default_image = '\xff'\n")
    with pytest.raises(ConfigError, match=r"^~/.config/banger/config.toml: invalid TOML: the file is not UTF-8$"):
        load(banger_env)


def test_the_loaded_file_is_fingerprinted(banger_env: dict[str, str]) -> None:
    assert load(banger_env).digest is None and load(banger_env).stamp is None
    path = write_config(banger_env, "default_image = 'alpine'\n")
    config = load(banger_env)
    assert config.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert config.stamp == file_stamp(path) and config.stamp is not None


@pytest.mark.builtins
def test_values_types_and_provenance(banger_env: dict[str, str]) -> None:
    write_config(
        banger_env,
        "state_dir = '~/vms'\nvmm_backend = 'qemu'\n[vm_defaults]\nvcpu = 2\ndisk_size = '16G'\n"
        "[[file_sync]]\nhost = '~/.gitconfig'\nguest = '~/.gitconfig'\nmode = '0644'\n",
    )
    config = load(banger_env)
    assert config["state_dir"] == Path(banger_env["HOME"]) / "vms"
    assert config["vm_defaults"] == {"vcpu": 2, "disk_size": 16 << 30}
    assert config["file_sync"] == [{"host": "~/.gitconfig", "guest": "~/.gitconfig", "mode": "0644"}]
    shown = json.loads(invoke_cli(["config", "show", "--json"], banger_env).stdout)
    rows = {r["key"]: r for r in shown["settings"]}
    assert rows["vmm_backend"] == {
        "key": "vmm_backend",
        "value": "qemu",
        "source": "~/.config/banger/config.toml",
        "plugin": "core",
        "help": "VMM backend for new VMs: auto (the best one usable here, see `banger doctor`) or a backend name.",
        "type": "str",
        "default": "auto",
        "aliases": [],
    }
    assert rows["qemu_machine"]["source"] == "default" and rows["qemu_machine"]["plugin"] == "qemu"
    assert shown["exists"] is True


def test_banger_config_env_overrides_the_path(banger_env: dict[str, str], tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text("default_image = 'alpine'\n")
    config = load({**banger_env, "BANGER_CONFIG": str(other)})
    assert config["default_image"] == "alpine" and config.sources["default_image"] == str(other)


def test_ssh_key_path_takes_home_relative_and_absolute_paths(banger_env: dict[str, str]) -> None:
    write_config(banger_env, "ssh_key_path = '~/.ssh/id_banger'\n")
    assert load(banger_env)["ssh_key_path"] == Path(banger_env["HOME"]) / ".ssh" / "id_banger"
    write_config(banger_env, "ssh_key_path = '/etc/banger/id'\n")
    assert load(banger_env)["ssh_key_path"] == Path("/etc/banger/id")


def test_default_image_name_is_another_name_for_default_image(banger_env: dict[str, str]) -> None:
    write_config(banger_env, "default_image_name = 'alpine'\n")
    config = load(banger_env)
    assert config["default_image"] == "alpine" and config.sources["default_image"] == "~/.config/banger/config.toml"
    assert "default_image_name" not in config
    # Both, saying the same thing, is fine.
    write_config(banger_env, "default_image_name = 'alpine'\ndefault_image = 'alpine'\n")
    assert load(banger_env)["default_image"] == "alpine"


@pytest.mark.builtins
def test_default_dns_is_another_name_for_the_bridge_guest_dns(banger_env: dict[str, str]) -> None:
    write_config(banger_env, "default_dns = '198.51.100.53'\n")
    assert load(banger_env)["guest_dns"] == "198.51.100.53"
    # Without the plugin that reads it, the key is unknown under the name the file uses.
    config = load({**banger_env, "BANGER_DISABLE_PLUGINS": "bridge"})
    assert config.warnings == [
        "~/.config/banger/config.toml: ignoring unknown key 'default_dns' (inactive plugins: bridge)"
    ]


@pytest.mark.builtins
def test_config_show_explains_every_key(banger_env: dict[str, str]) -> None:
    write_config(banger_env, "default_image_name = 'alpine'\n[vm_defaults]\nvcpu = 3\n")
    result = invoke_cli(["config", "show"], banger_env)
    assert result.exit_code == 0, result.stderr
    blocks = {block.split()[0]: block for block in result.stdout.split("\n\n")[1:]}
    assert set(blocks) == set(load(banger_env).options)
    head, *explained = blocks["default_image"].splitlines()
    assert head == 'default_image = "alpine"  # ~/.config/banger/config.toml'
    assert " ".join(line.strip() for line in explained) == (
        "Image new VMs boot when no --image is given; pulled on first use (`banger image list --available` "
        'lists them). A string; default "debian-bookworm"; also accepted as default_image_name.'
    )
    assert blocks["vm_defaults"].splitlines()[0] == "vm_defaults = { vcpu = 3 }  # ~/.config/banger/config.toml"
    assert "      disk_size: a size like 8G or 512M: writable disk size, e.g. 16G (default 8G)" in blocks["vm_defaults"]
    assert blocks["qemu_machine"].splitlines() == [
        'qemu_machine = "microvm"  # default, plugin qemu',
        "    QEMU machine type.",
        '    A string: one of microvm, q35; default "microvm".',
    ]
    assert blocks["guest_dns"].splitlines()[0] == "guest_dns  # unset, plugin bridge"


@pytest.mark.builtins
def test_docs_config_md_documents_every_key_and_alias(banger_env: dict[str, str]) -> None:
    """docs/config.md has a section per key (``### `key```) naming its type and default, and every alias."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "config.md").read_text()
    sections = {part.split("`", 2)[1]: part for part in docs.split("\n### ")[1:] if part.startswith("`")}
    options = load(banger_env).options
    assert set(sections) == set(options)
    for key, option in options.items():
        assert f"Type: {type_text(option)}" in sections[key], key
        if option.default is not None:
            assert "Default: `" in sections[key], key
        assert "```toml" in sections[key], f"{key} has no example"
    for alias, key in ALIASES.items():
        assert f"`{alias}`" in sections[key], alias


@pytest.mark.builtins
def test_unknown_key_is_a_warning_while_a_plugin_is_blocked(banger_env: dict[str, str]) -> None:
    write_config(banger_env, "firecracker_bin = '/opt/fc'\n")
    env = {**banger_env, "BANGER_DISABLE_PLUGINS": "firecracker"}
    config = load(env)
    assert "firecracker_bin" not in config
    assert config.warnings == [
        "~/.config/banger/config.toml: ignoring unknown key 'firecracker_bin' (inactive plugins: firecracker)"
    ]


@pytest.mark.parametrize(
    ("text", "size"),
    [("16G", 16 << 30), ("512M", 512 << 20), ("512MiB", 512 << 20), ("1.5G", 3 << 29), (4096, 4096), ("10", 10)],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


def test_parse_size_counts_plain_numbers_in_the_default_unit() -> None:
    assert parse_size("2048", default_unit="m") == 2048 << 20
    assert parse_size(2048, default_unit="m") == 2048 << 20
    assert parse_size("2G", default_unit="m") == 2 << 30
    assert parse_size("1024T") == MAX_SIZE


FORMS = "use a whole number of bytes (17179869184) or a number with a unit K, M, G or T (16G, 1.5G, 512MiB)"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", f"'' is not a size: {FORMS}"),
        ("G", f"'G' is not a size: {FORMS}"),
        ("-1", f"'-1' is not a size: {FORMS}"),
        ("1e9", f"'1e9' is not a size: {FORMS}"),
        ("12Q", f"'12Q' is not a size: {FORMS}"),
        ("1G2", f"'1G2' is not a size: {FORMS}"),
        ("\u0661\u0662G", f"'\u0661\u0662G' is not a size: {FORMS}"),  # Arabic-Indic digits
        ("9" * 400 + "G", f"'{'9' * 36}... is not a size: {FORMS}"),
        (True, f"expected a size, got True: {FORMS}"),
        (1.5, f"expected a size, got 1.5: {FORMS}"),
        (None, f"expected a size, got None: {FORMS}"),
        (0, "a size must be more than 0, got 0"),
        ("0", "a size must be more than 0, got 0"),
        ("0.1", "a size must be more than 0, got 0.1"),
        (-1, "a size must be more than 0, got -1"),
        ("9" * 30 + "T", f"'{'9' * 30}T' is too large: sizes go up to 1024T"),
        ("1025T", "'1025T' is too large: sizes go up to 1024T"),
        (MAX_SIZE + 1, f"{MAX_SIZE + 1} is too large: sizes go up to 1024T"),
    ],
)
def test_parse_size_rejects_with_one_line_naming_the_forms(value: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_size(value)
    assert str(caught.value) == message


def test_format_size() -> None:
    assert [format_size(v) for v in (16 << 30, 512 << 20, 3 << 29, 100)] == ["16G", "512M", "1536M", "100"]
