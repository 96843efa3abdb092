"""Recipe parsing, validation errors, switches, references and hashing."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from banger_debootstrap.recipe import RecipeError, find_image, find_recipe, load_recipe, parse_ref, recipe_dirs

pytestmark = pytest.mark.unit

INTEGRITY = "sha512-" + "A" * 86 + "=="
NPM = f"""
[[npm_binaries]]
package = "@scope/tool-linux-x64"
version = "1.2.3"
integrity = "{INTEGRITY}"
member = "package/bin/tool"
dest = "/usr/local/bin/tool"
"""

GOLDEN = Path(__file__).resolve().parents[3] / "images" / "golden"


def test_golden_recipe_is_valid() -> None:
    recipe = load_recipe(GOLDEN / "debian-bookworm")
    plan = recipe.plan()
    assert plan.ref == "debian-bookworm"
    assert plan.kernel_ref == "generic-6.1"
    assert plan.options == {"lean-boot": True, "docker": False}
    for package in ("systemd-sysv", "openssh-server", "git", "jq", "curl", "ca-certificates", "iproute2"):
        assert package in plan.packages
    for package in ("python3", "build-essential", "sudo", "less"):
        assert package in plan.packages
    dests = {f.dest: f for f in plan.files}
    assert dests["/etc/machine-id"].content == b"" and dests["/etc/fstab"].content == b""
    sshd = dests["/etc/ssh/sshd_config.d/banger.conf"].content.decode()
    for line in (
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "AuthorizedKeysFile /root/.ssh/authorized_keys",
        "StrictModes yes",
    ):
        assert line in sshd.splitlines()
    masked = {u for s in plan.steps if s.action == "mask" for u in s.units}
    assert {"getty-static.service", "e2scrub_reap.service"} <= masked
    assert any("/etc/ssh/ssh_host_*" in s.paths for s in plan.steps if s.action == "remove")
    assert plan.steps[-1].action == "remove" and "/etc/ssh/ssh_host_*" in plan.steps[-1].paths


def test_golden_recipe_ships_pinned_mise_and_names_the_docker_variant() -> None:
    recipe = load_recipe(GOLDEN / "debian-bookworm")
    plan = recipe.plan()
    (mise,) = plan.npm_binaries
    assert (mise.package, mise.member, mise.dest) == (
        "@jdxcode/mise-linux-x64",
        "package/bin/mise",
        "/usr/local/bin/mise",
    )
    assert mise.version.count(".") == 2 and mise.integrity.startswith("sha512-") and len(mise.sha512) == 128
    # ssh sessions (pam_env) skip mise's version check: the image pins mise, and VMs may be offline
    environment = {f.dest: f.content for f in plan.files}["/etc/environment"]
    assert b"MISE_DISABLE_UPDATE_WARNING=1" in environment.splitlines()
    assert ("env", "MISE_DISABLE_UPDATE_WARNING=1", "/usr/local/bin/mise", "--version") in [s.argv for s in plan.steps]
    assert recipe.variants == {"debian-bookworm-docker": {"docker": True}}
    docker = recipe.plan(variant="debian-bookworm-docker")
    assert (
        docker.ref == "debian-bookworm-docker" and docker.recipe_hash() == recipe.plan({"docker": True}).recipe_hash()
    )
    assert docker.npm_binaries == plan.npm_binaries


def test_npm_binary_pin_is_part_of_the_hash(tmp_path: Path, kit: SimpleNamespace) -> None:
    recipe_dir = kit.write_recipe(tmp_path, kit.MINIMAL + NPM)
    plan = load_recipe(recipe_dir).plan()
    (binary,) = plan.npm_binaries
    assert binary.sha512 == "00" * 64
    before = plan.recipe_hash()
    (recipe_dir / "recipe.toml").write_text(kit.MINIMAL + NPM.replace('"1.2.3"', '"1.2.4"'))
    assert load_recipe(recipe_dir).plan().recipe_hash() != before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('package = "@scope/tool-linux-x64"', 'package = "../tool"'), "is not an npm package name"),
        (('version = "1.2.3"', 'version = "^1.2"'), "one exact version"),
        ((f'integrity = "{INTEGRITY}"', 'integrity = "sha1-AAAA"'), "the registry's sha512 dist.integrity"),
        ((f'integrity = "{INTEGRITY}"', 'integrity = "sha512-!!"'), "the registry's sha512 dist.integrity"),
        (('member = "package/bin/tool"', 'member = "../bin/tool"'), "normalized relative path"),
        (('member = "package/bin/tool"', 'member = "/bin/tool"'), "normalized relative path"),
        (('dest = "/usr/local/bin/tool"', 'dest = "usr/bin/tool"'), "not an absolute guest path"),
        (('dest = "/usr/local/bin/tool"', 'dest = "/usr/bin/tool"\nmode = "4755"'), "unknown key"),
    ],
)
def test_npm_binary_validation(tmp_path: Path, kit: SimpleNamespace, change: tuple[str, str], message: str) -> None:
    with pytest.raises(RecipeError, match=message) as caught:
        load_recipe(kit.write_recipe(tmp_path, kit.MINIMAL + NPM.replace(*change)))
    assert "[[npm_binaries]] #1" in str(caught.value)


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ('other-extra = ["extra"]', "a variant's name is 'tiny-' plus"),
        ('tiny-x = "extra"', "non-empty list of switches"),
        ("tiny-x = []", "non-empty list of switches"),
        ('tiny-x = ["docker"]', "'docker' is not a switch"),
        ('tiny-x = ["extra", "no-extra"]', "'no-extra' is not a switch"),
    ],
)
def test_variant_validation(tmp_path: Path, kit: SimpleNamespace, variants: str, message: str) -> None:
    text = kit.MINIMAL.replace('tiny-extra = ["extra"]', variants)
    with pytest.raises(RecipeError, match=message):
        load_recipe(kit.write_recipe(tmp_path, text))


def test_find_image_resolves_variants(tmp_path: Path, kit: SimpleNamespace) -> None:
    kit.write_recipe(tmp_path)
    dirs = [tmp_path]
    found = find_image("tiny-extra", dirs)
    assert found is not None and found[0].name == "tiny" and found[1] == "tiny-extra"
    exact = find_image("tiny", dirs)
    assert exact is not None and exact[1] is None
    assert find_image("tiny-other", dirs) is None and find_image("Tiny-extra", dirs) is None
    with pytest.raises(RecipeError, match="has no variant 'tiny-other'"):
        exact[0].plan(variant="tiny-other")


def test_golden_recipe_without_boot_trimming() -> None:
    plan = load_recipe(GOLDEN / "debian-bookworm").plan({"lean-boot": False})
    assert plan.ref == "debian-bookworm.no-lean-boot"
    assert not [s for s in plan.steps if s.action == "mask"]
    enabled = {u for s in plan.steps if s.action == "enable" for u in s.units}
    assert "systemd-networkd-wait-online.service" in enabled
    assert "/etc/ssh/sshd_config.d/banger-hostkey.conf" not in {f.dest for f in plan.files}


def test_golden_recipe_docker_option() -> None:
    plan = load_recipe(GOLDEN / "debian-bookworm").plan({"docker": True})
    assert plan.ref == "debian-bookworm.docker"
    assert {"docker.io", "apparmor"} <= set(plan.packages)
    # the kernel's modules come from the package generic-6.1 resolves to after the updates
    assert plan.late_packages == ("linux-image-cloud-amd64",)
    removed = {p for s in plan.steps if s.action == "remove" for p in s.paths}
    assert "/boot/vmlinuz-*" in removed and "/boot/initrd.img-*" in removed
    assert load_recipe(GOLDEN / "debian-bookworm").plan().late_packages == ()


def test_switches_select_files_steps_and_packages(tmp_path: Path, kit: SimpleNamespace) -> None:
    recipe = load_recipe(kit.write_recipe(tmp_path))
    default = recipe.plan()
    extra = recipe.plan({"extra": True})
    assert default.ref == "tiny" and extra.ref == "tiny.extra"
    assert default.packages == ("openssh-server",) and extra.packages == ("openssh-server", "jq")
    assert default.late_packages == () and extra.late_packages == ("linux-image-cloud-amd64",)
    assert [f.dest for f in default.files] == ["/etc/motd"]
    assert [f.dest for f in extra.files] == ["/etc/motd", "/etc/extra"]
    assert [s.action for s in default.steps] == ["mask"] and extra.steps == ()
    assert default.recipe_hash() != extra.recipe_hash()
    assert recipe.plan({"extra": False}).ref == "tiny"  # defaults are not spelled out
    with pytest.raises(RecipeError, match="has no option 'nope'; it has: extra"):
        recipe.plan({"nope": True})


def test_hash_follows_file_contents(tmp_path: Path, kit: SimpleNamespace) -> None:
    recipe_dir = kit.write_recipe(tmp_path)
    before = load_recipe(recipe_dir).plan().recipe_hash()
    assert load_recipe(recipe_dir).plan().recipe_hash() == before
    (recipe_dir / "files/motd").write_text("changed\n")
    assert load_recipe(recipe_dir).plan().recipe_hash() != before


def test_parse_ref() -> None:
    assert parse_ref("debian-bookworm") == ("debian-bookworm", {})
    assert parse_ref("debian-bookworm.docker.no-lean-boot") == (
        "debian-bookworm",
        {"docker": True, "lean-boot": False},
    )
    for bad in ("Debian", "../x", "x.", "x.Docker", "x.a.a", "x+a", "docker.io/library/debian"):
        with pytest.raises(RecipeError):
            parse_ref(bad)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("schema = 1", "schema = 2"), "schema must be 1"),
        (('name = "tiny"', 'name = "other"'), "must be a-z, 0-9, '-' and equal the directory name"),
        (('suite = "bookworm"', 'suite = "Bookworm!"'), "is not a Debian suite name"),
        (('packages = ["openssh-server"]', 'packages = ["openssh-server; rm -rf /"]'), "invalid entry"),
        (('description = "a tiny image"', 'description = "x"\nbogus = 1'), "unknown key"),
        (('dest = "/etc/motd"', 'dest = "etc/motd"'), "not an absolute guest path"),
        (('dest = "/etc/motd"', 'dest = "/etc/../../motd"'), "no '..'"),
        (('dest = "/etc/motd"', 'dest = "/etc/*"'), "wildcards"),
        (('src = "motd"', 'src = "../recipe.toml"'), "relative path under files/"),
        (('src = "motd"', 'src = "missing"'), "is not a regular file"),
        (('src = "motd"', 'src = "motd"\ncontent = "x"'), "exactly one of 'src'"),
        (('src = "motd"', 'src = "motd"\nmode = "4755"'), "setuid"),
        (('src = "motd"', 'src = "motd"\nmode = "rw"'), "octal"),
        (('when = "extra"', 'when = "missing"'), "unknown option 'missing'"),
        (('action = "mask"', 'action = "shell"'), "unknown action 'shell'"),
        (('units = ["getty@.service"]', "units = []"), "non-empty 'units'"),
        (('units = ["getty@.service"]', 'units = ["getty; reboot"]'), "invalid entry"),
        (("[options.extra]", "[options.no-extra]"), "may not start with 'no-'"),
        (("default = false", 'default = "no"'), "'default' must be bool"),
    ],
)
def test_validation_errors_name_file_and_field(
    tmp_path: Path, change: tuple[str, str], message: str, kit: SimpleNamespace
) -> None:
    old, new = change
    assert old in kit.MINIMAL
    recipe_dir = kit.write_recipe(tmp_path, kit.MINIMAL.replace(old, new, 1))
    with pytest.raises(RecipeError, match=message) as caught:
        load_recipe(recipe_dir)
    assert str(recipe_dir / "recipe.toml") in str(caught.value)


def test_run_and_remove_steps_validate(tmp_path: Path, kit: SimpleNamespace) -> None:
    good = kit.MINIMAL + '\n[[steps]]\naction = "run"\nargv = ["passwd", "--lock", "root"]\n'
    good += '\n[[steps]]\naction = "remove"\npaths = ["/var/log/*.log"]\n'
    plan = load_recipe(kit.write_recipe(tmp_path, good)).plan()
    assert plan.steps[1].argv == ("passwd", "--lock", "root")
    assert plan.steps[2].paths == ("/var/log/*.log",)
    for extra, message in (
        ('action = "run"\nargv = "rm -rf /"', "'argv' must be list"),
        ('action = "run"\nargv = ["", "x"]', "naming a program first"),
        ('action = "remove"\npaths = ["/"]', "not '/'"),
        ('action = "remove"\npaths = []', "non-empty 'paths'"),
        ('action = "symlink"\npaths = ["/etc/x"]', "missing required key 'target'"),
        ('action = "symlink"\npaths = []\ntarget = "/dev/null"', "non-empty 'paths'"),
    ):
        bad_dir = kit.write_recipe(
            tmp_path / f"case{len(list(tmp_path.iterdir()))}", kit.MINIMAL + f"\n[[steps]]\n{extra}\n"
        )
        with pytest.raises(RecipeError, match=message):
            load_recipe(bad_dir)


def test_not_toml(tmp_path: Path, kit: SimpleNamespace) -> None:
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(kit.write_recipe(tmp_path, "schema = = 1"))


def test_find_recipe_and_dirs(tmp_path: Path, kit: SimpleNamespace) -> None:
    kit.write_recipe(tmp_path)
    dirs = recipe_dirs([tmp_path])
    assert dirs[0] == tmp_path and GOLDEN in dirs
    assert find_recipe("tiny", dirs) == tmp_path / "tiny"
    assert find_recipe("debian-bookworm", dirs) == GOLDEN / "debian-bookworm"
    assert find_recipe("missing", dirs) is None
    assert find_recipe("../tiny", dirs) is None


def test_recipe_dir_shadowing(tmp_path: Path) -> None:
    shutil.copytree(GOLDEN / "debian-bookworm", tmp_path / "debian-bookworm")
    assert find_recipe("debian-bookworm", recipe_dirs([tmp_path])) == tmp_path / "debian-bookworm"
