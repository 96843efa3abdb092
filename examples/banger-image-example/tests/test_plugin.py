"""The plugin as banger sees it: loaded through its entry point, its config key, its doctor row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from banger_core.testing import PluginManager, invoke_cli, make_plugin_context
from banger_hookspecs import PluginContext
from banger_image_example import source
from banger_image_example.plugin import DEFAULT_HEADROOM, HEADROOM_KEY, banger_doctor_checks


def write_config(env: dict[str, str], text: str) -> None:
    (Path(env["XDG_CONFIG_HOME"]) / "banger" / "config.toml").write_text(text)


@pytest.mark.unit
def test_loads_as_an_active_external_plugin(plugin_manager: PluginManager) -> None:
    (record,) = [r for r in plugin_manager.plugin_records() if r.name == "image-example"]
    assert (record.status, record.source, record.dist) == ("active", "external", "banger-image-example")
    assert sorted(record.hooks) == ["config_options", "doctor_checks", "image_sources"]
    assert plugin_manager.image_sources()["dir"].value.priority == 40


@pytest.mark.unit
def test_headroom_defaults_to_64m(plugin_context: PluginContext) -> None:
    assert plugin_context.config[HEADROOM_KEY] == DEFAULT_HEADROOM == 64 << 20


@pytest.mark.unit
def test_headroom_is_read_from_config_toml(installed: dict[str, str]) -> None:
    write_config(installed, f'{HEADROOM_KEY} = "256M"\n')
    assert make_plugin_context(installed).config[HEADROOM_KEY] == 256 << 20
    shown = json.loads(invoke_cli(["config", "show", "--json"], installed).output)
    (row,) = [r for r in shown["settings"] if r["key"] == HEADROOM_KEY]
    assert (row["value"], row["plugin"], row["type"]) == (256 << 20, "image-example", "size")
    assert row["source"].endswith("config.toml")


@pytest.mark.unit
def test_a_bad_headroom_is_one_line_naming_the_key(installed: dict[str, str]) -> None:
    write_config(installed, f'{HEADROOM_KEY} = "lots"\n')
    result = invoke_cli(["config", "show"], installed)
    assert result.exit_code != 0
    (line,) = result.output.strip().splitlines()
    assert HEADROOM_KEY in line and "a size like 8G or 512M" in line


@pytest.mark.unit
def test_doctor_finds_mkfs(plugin_context: PluginContext) -> None:
    (check,) = banger_doctor_checks()
    (row,) = check.run(plugin_context)
    assert row.status == "ok", row
    assert row.summary.startswith("mkfs.ext4 1.") and row.summary.endswith("/mkfs.ext4")


@pytest.mark.unit
def test_doctor_warns_without_mkfs(
    plugin_context: PluginContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(source, "MKFS_SEARCH_PATH", str(tmp_path))  # a host without e2fsprogs
    (check,) = banger_doctor_checks()
    (row,) = check.run(plugin_context)
    assert (row.status, row.hint) == ("warn", "install e2fsprogs (apt-get install e2fsprogs)")


@pytest.mark.unit
def test_doctor_warns_about_an_mkfs_without_d(
    plugin_context: PluginContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "mkfs.ext4"  # a real program answering -V like e2fsprogs 1.42 did
    old.write_text("#!/bin/sh\necho 'mke2fs 1.42.13 (17-May-2015)' >&2\n")
    old.chmod(0o755)
    monkeypatch.setattr(source, "MKFS_SEARCH_PATH", str(tmp_path))
    (check,) = banger_doctor_checks()
    (row,) = check.run(plugin_context)
    assert row.status == "warn" and "1.42.13" in row.summary and "1.43" in row.summary
