"""The opt-in web UI for real: a bangerd serving it on 127.0.0.1, driven by headless Chromium and httpx.

Every client logs in the way the owner does: with the link `banger web` prints.

VMs run under the fake VMM plugin (a real child process adopted by the daemon),
so no guest boots. Chromium runs with every non-loopback request sent to a
dead proxy on loopback (no background traffic leaves the machine).

Set BANGER_SCREENSHOTS=DIR to save the pages as PNGs (docs/images/ holds them).
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from banger_core.common.weblogin import CODE_LIFETIME, make_login_code
from tests.support import banger_fake
from tests.support.daemon import DaemonHarness

BIN = Path(sys.executable).parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
EVIL_LOG_LINE = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2"> & done'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(h: DaemonHarness, extra: str) -> None:
    config = Path(h.env["XDG_CONFIG_HOME"]) / "banger" / "config.toml"
    config.write_text('default_image = "fake-tiny"\n' + extra)


def daemon_log(h: DaemonHarness) -> str:
    return (h.state / "logs" / "bangerd.log").read_text()


def login_link(h: DaemonHarness) -> str:
    """What the owner gets from `banger web`: http://HOST:PORT/login#code=..."""
    done = subprocess.run([BIN / "banger", "web"], env=h.env, capture_output=True, text=True, check=True)
    assert done.stderr == f"(the link logs in once, within {CODE_LIFETIME} s)\n"
    return done.stdout.strip()


def post_login(http: httpx.Client, base: str, link: str) -> httpx.Response:
    """What the login page's script does with the link: POST the fragment's code."""
    assert link.startswith(base + "/login#code=")
    return http.post("/login", data={"code": link.partition("#code=")[2]}, headers={"Origin": base})


@dataclass
class WebSetup:
    harness: DaemonHarness
    base: str
    vmm_sockets: dict[str, str]

    def vm_state(self, name: str) -> str:
        return self.harness.client().vms.get(name).state

    @contextlib.contextmanager
    def http(self) -> Iterator[httpx.Client]:
        """An HTTP client logged in through a `banger web` link."""
        with httpx.Client(base_url=self.base) as http:
            assert post_login(http, self.base, login_link(self.harness)).status_code == 303
            yield http

    def log_in(self, browser: webdriver.Chrome) -> None:
        browser.get(login_link(self.harness))
        wait_title(browser, "Virtual machines · banger")


def add_running_vm(h: DaemonHarness, name: str, sock_dir: Path, pids: list[int], ssh_port: int) -> str:
    """A VM the next daemon adopts as running: a live fake VMM and its handles (the reconcile test's recipe)."""
    vm = h.client().vms.create(name=name, backend="fakevmm", start=False)
    h.stop()
    sock = str(sock_dir / f"{name}.sock")
    pid = banger_fake.spawn(sock)
    pids.append(pid)
    handles = {
        "vmm": {
            "backend": "fakevmm",
            "pid": pid,
            "start_time": banger_fake.start_time(pid),
            "control_socket": sock,
            "extra": {},
        },
        "net": {
            "backend": "usernet",
            "nic": {"kind": "user", "mac": vm.mac, "forwards": []},
            "guest": {"address": "10.0.2.15", "prefix": 24, "gateway": "10.0.2.2", "dns": "10.0.2.3"},
            "ssh_host": "127.0.0.1",
            "ssh_port": ssh_port,
        },
    }
    (h.state / "vms" / vm.id / "handles.json").write_text(json.dumps(handles))
    with sqlite3.connect(h.state / "banger.db") as conn:
        conn.execute(
            "UPDATE vms SET state = 'running', created_at = datetime('now', '-1 hour'),"
            " started_at = datetime('now', '-754 seconds') WHERE name = ?",
            (name,),
        )
    return sock


@pytest.fixture
def web(daemon: DaemonHarness, tmp_path: Path) -> Iterator[WebSetup]:
    """A daemon serving the UI on 127.0.0.1 with two running VMs and one created one."""
    port = free_port()
    write_config(daemon, f'web_listen_addr = "127.0.0.1:{port}"\nssh_ready_timeout = 2\n')
    client = daemon.client()
    client.images.pull("fake-tiny")
    client.kernels.pull("fake-kernel")
    pids: list[int] = []
    try:
        sockets = {
            name: add_running_vm(daemon, name, tmp_path, pids, port)
            for name, port in (("web1", 2201), ("builder", 2202))
        }
        daemon.client().vms.create(name="idle", backend="fakevmm", start=False)
        assert daemon.client().vms.get("web1").state == "running"
        status = daemon.client().daemon.status()
        assert status.web_ui == f"http://127.0.0.1:{port}/ (log in: banger web --open)"
        assert status.web_url == f"http://127.0.0.1:{port}/"
        yield WebSetup(daemon, f"http://127.0.0.1:{port}", sockets)
    finally:
        daemon.stop()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # we are root
        "--disable-gpu",
        "--window-size=1100,900",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-domain-reliability",
        # Anything not on loopback goes to a dead proxy on loopback, and no name is resolved.
        "--proxy-server=http://127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: webdriver.Chrome, name: str) -> None:
    target = os.environ.get("BANGER_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(target) / f"{name}.png"))


def wait_main_text(driver: webdriver.Chrome, text: str) -> None:
    """Wait until the page's <main> shows ``text``; a page still loading may swap <main> under the lookup."""
    WebDriverWait(driver, 20, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: text in d.find_element(By.TAG_NAME, "main").text, message=f"expected {text!r} on the page"
    )


def wait_title(driver: webdriver.Chrome, title: str) -> None:
    """Wait for a navigation (a click may return before the next page loaded)."""
    WebDriverWait(driver, 30).until(lambda d: d.title == title, message=f"expected page {title!r}")


def rows(driver: webdriver.Chrome, key: int = 0) -> dict[str, list[str]]:
    """Table rows by the text of cell ``key``."""
    out = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "tbody tr"):
        cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
        out[cells[key]] = cells
    return out


def test_pages_show_the_daemons_data(web: WebSetup, browser: webdriver.Chrome) -> None:
    web.log_in(browser)
    assert browser.current_url == web.base + "/"
    assert browser.title == "Virtual machines · banger"
    vms = rows(browser)
    assert set(vms) == {"web1", "builder", "idle"}
    _, state, address, image, backend, uptime, actions = vms["web1"]
    assert (state, address, image, backend) == ("running", "127.0.0.1:2201", "fake-tiny", "fakevmm")
    assert re.fullmatch(r"1[2-9]m \d\ds", uptime), uptime
    assert actions == "Stop Delete"
    assert vms["idle"][1:3] == ["created", "-"] and vms["idle"][6] == "Start Delete"
    screenshot(browser, "web-ui-vms")

    browser.find_element(By.LINK_TEXT, "Images & kernels").click()
    wait_title(browser, "Images & kernels · banger")
    tables = browser.find_elements(By.TAG_NAME, "table")
    assert "fake-tiny" in tables[0].text and "fake-kernel" in tables[1].text
    screenshot(browser, "web-ui-images")

    browser.find_element(By.LINK_TEXT, "Plugins").click()
    wait_title(browser, "Plugins · banger")
    plugins = rows(browser)
    assert plugins["fake"][3] == "active" and "vmm_backends" in plugins["fake"][4]
    assert plugins["qemu"][2] == "builtin"

    browser.find_element(By.LINK_TEXT, "Doctor").click()
    wait_title(browser, "Doctor · banger")
    doctor = rows(browser, key=1)
    assert doctor["python"][0] == "ok" and "vmm-backend" in doctor
    assert doctor["web-ui"][2].startswith(f"bangerd serves it at {web.base}/")
    screenshot(browser, "web-ui-doctor")


def test_stop_asks_first_and_then_stops(web: WebSetup, browser: webdriver.Chrome) -> None:
    web.log_in(browser)
    row = browser.find_element(By.XPATH, "//tr[td/a[text()='web1']]")
    row.find_element(By.LINK_TEXT, "Stop").click()
    wait_title(browser, "Stop web1? · banger")
    assert "Stop VM web1 (now running)?" in browser.find_element(By.TAG_NAME, "main").text
    screenshot(browser, "web-ui-confirm-stop")
    assert web.vm_state("web1") == "running"  # showing the confirmation changed nothing
    browser.find_element(By.ID, "confirm").click()
    wait_title(browser, "VM web1 · banger")
    facts = browser.find_element(By.CSS_SELECTOR, "dl.facts").text
    assert "State\nstopped" in facts
    assert web.vm_state("web1") == "stopped"
    assert not banger_fake.answers(web.vmm_sockets["web1"])  # the fake VMM was really stopped
    assert web.vm_state("builder") == "running"  # only the confirmed VM stopped


def test_cancel_leaves_the_vm_alone(web: WebSetup, browser: webdriver.Chrome) -> None:
    web.log_in(browser)
    browser.get(web.base + "/vms/builder/delete")
    browser.find_element(By.LINK_TEXT, "Cancel").click()
    wait_title(browser, "VM builder · banger")
    assert web.vm_state("builder") == "running"


def test_serial_log_is_followed_live_and_shown_as_text(web: WebSetup, browser: webdriver.Chrome) -> None:
    serial = Path(web.harness.client().vms.get("web1").serial_log)
    serial.parent.mkdir(parents=True, exist_ok=True)
    boot = [
        "[    0.000000] Linux version 6.1.0-28-cloud-amd64 (debian-kernel@lists.debian.org)",
        "[    0.000000] Command line: console=ttyS0 reboot=t quiet banger.net=usernet",
        "[    0.412031] virtio_blk virtio0: [vda] 2097152 512-byte logical blocks (1.07 GB/1.00 GiB)",
        "[    0.418220] virtio_net virtio2 eth0: renamed from eth0",
        "banger-init: overlay mounted (image vda read-only, upper vdb)",
        "banger-init: switching root",
        "[  OK  ] Started ssh.service - OpenBSD Secure Shell server.",
        "[  OK  ] Reached target multi-user.target - Multi-User System.",
    ]
    serial.write_text("\n".join([*boot, EVIL_LOG_LINE]) + "\n")
    web.log_in(browser)
    browser.get(web.base + "/vms/web1")
    log = browser.find_element(By.ID, "serial-log")
    WebDriverWait(browser, 20).until(lambda d: "& done" in log.text)
    assert EVIL_LOG_LINE in log.text  # shown literally, not interpreted
    assert browser.find_elements(By.CSS_SELECTOR, "#serial-log *") == []
    assert browser.execute_script("return window.pwned === undefined") is True
    assert browser.find_element(By.ID, "log-status").text == "following"
    with serial.open("a") as fh:
        fh.write("Debian GNU/Linux 12 web1 ttyS0\n")
    WebDriverWait(browser, 20).until(lambda d: "web1 ttyS0" in log.text)
    screenshot(browser, "web-ui-vm")


# -- CSRF, Host, origin: plain HTTP --------------------------------------------


def csrf_from(page: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert match, page
    return match.group(1)


def test_cross_origin_and_tokenless_posts_are_refused(web: WebSetup) -> None:
    with web.http() as http:
        confirm = http.get("/vms/web1/stop")
        assert confirm.status_code == 200
        csrf = csrf_from(confirm.text)
        for method, path in (("GET", "/vms/web1/stop"), ("GET", "/vms/web1/delete"), ("GET", "/vms/web1")):
            assert http.request(method, path).status_code == 200
        refused = {
            "evil origin": http.post("/vms/web1/stop", data={"csrf": csrf}, headers={"Origin": "http://evil.example"}),
            "evil origin, same port": http.post(
                "/vms/web1/stop", data={"csrf": csrf}, headers={"Origin": "http://evil.example:" + web.base[-5:]}
            ),
            "no origin": http.post("/vms/web1/stop", data={"csrf": csrf}),
            "cross-site fetch": http.post(
                "/vms/web1/stop", data={"csrf": csrf}, headers={"Sec-Fetch-Site": "cross-site"}
            ),
            "no csrf token": http.post("/vms/web1/stop", headers={"Origin": web.base}),
            "wrong csrf token": http.post("/vms/web1/stop", data={"csrf": "0" * 64}, headers={"Origin": web.base}),
        }
        assert {why: r.status_code for why, r in refused.items()} == dict.fromkeys(refused, 403)
        assert "cross-origin request refused (Origin http://evil.example)" in refused["evil origin"].text
        assert web.vm_state("web1") == "running"
        # DNS rebinding: a page from another name resolving to 127.0.0.1 sends its own Host.
        rebound = http.get("/", headers={"Host": f"evil.example:{web.base.rsplit(':', 1)[1]}"})
        assert rebound.status_code == 421 and "web1" not in rebound.text
        # The same request from our own page goes through.
        done = http.post("/vms/web1/stop", data={"csrf": csrf}, headers={"Origin": web.base})
        assert done.status_code == 303 and done.headers["location"] == "/vms/web1"
        assert web.vm_state("web1") == "stopped"
        same_origin_fetch = http.post(
            "/vms/builder/stop", data={"csrf": csrf}, headers={"Sec-Fetch-Site": "same-origin"}
        )
        assert same_origin_fetch.status_code == 303 and web.vm_state("builder") == "stopped"


def test_delete_and_a_failing_start_go_through_the_services(web: WebSetup) -> None:
    with web.http() as http:
        csrf = csrf_from(http.get("/vms/idle/delete").text)
        deleted = http.post("/vms/idle/delete", data={"csrf": csrf}, headers={"Origin": web.base})
        assert deleted.status_code == 303 and deleted.headers["location"] == "/"
        assert "idle" not in {vm.name for vm in web.harness.client().vms.list()}
        running = http.post("/vms/builder/delete", data={"csrf": csrf}, headers={"Origin": web.base})
        assert running.status_code == 409 and "VM builder is running: stop it first" in running.text
        forced = http.post("/vms/builder/delete", data={"csrf": csrf, "force": "1"}, headers={"Origin": web.base})
        assert forced.status_code == 303 and not banger_fake.answers(web.vmm_sockets["builder"])
        # The fake VMM has no sshd: the start fails after ssh_ready_timeout, and the page says what the CLI says.
        http.post("/vms/web1/stop", data={"csrf": csrf}, headers={"Origin": web.base})
        started = http.post("/vms/web1/start", data={"csrf": csrf}, headers={"Origin": web.base}, timeout=60)
        assert started.status_code == 500 and "ssh" in started.text
        assert (web.harness.client().vms.get("web1").last_error or "") in html.unescape(started.text)


def test_errors_are_pages_and_names_are_escaped(web: WebSetup) -> None:
    with web.http() as http:
        missing = http.get("/vms/%3Cscript%3Ex")
        assert missing.status_code in (400, 404) and "<script>x" not in missing.text
        assert "&lt;script&gt;x" in missing.text or "invalid" in missing.text.lower()
        csrf = csrf_from(http.get("/vms/idle/stop").text)
        conflict = http.post("/vms/idle/stop", data={"csrf": csrf}, headers={"Origin": web.base})
        assert conflict.status_code == 409 and "VM idle is not running (created)" in conflict.text
        page = http.get("/")
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
        assert page.headers["x-frame-options"] == "DENY"


# -- login: required on loopback too; links from `banger web`, the token --------

NOBODY = 65534


def test_without_a_login_nothing_is_shown_or_done(web: WebSetup) -> None:
    with httpx.Client(base_url=web.base) as http:
        for path in ("/", "/vms/web1", "/vms/web1/logs?follow=1", "/vms/web1/stop", "/images", "/plugins", "/doctor"):
            shown = http.get(path)
            assert (shown.status_code, shown.headers.get("location")) == (303, "/login"), path
        login = http.get("/login")
        assert login.status_code == 200 and "banger web" in login.text and "web1" not in login.text
        stop = http.post("/vms/web1/stop", headers={"Origin": web.base, "Sec-Fetch-Site": "same-origin"})
        assert stop.status_code == 401 and "log in first" in stop.text
        assert web.vm_state("web1") == "running"


def test_only_the_daemons_user_can_read_the_token(web: WebSetup) -> None:
    token_file = web.harness.runtime / "web-token"
    info = token_file.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o600, os.getuid())
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    # Another local user: cannot read the token, and the port alone gets it the login page only.
    probe = (
        "import sys, urllib.request\n"
        "try:\n"
        "    open(sys.argv[1]).read()\n"
        "except PermissionError as exc:\n"
        "    print('token: denied')\n"
        "page = urllib.request.urlopen(sys.argv[2]).read().decode()\n"
        "print('page:', 'web1' in page, 'Log in' in page)\n"
    )
    other = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", probe, str(token_file), web.base + "/"],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert other.stdout == "token: denied\npage: False True\n", other.stderr


def test_a_login_link_works_once(web: WebSetup) -> None:
    link = login_link(web.harness)
    token = (web.harness.runtime / "web-token").read_text().strip()
    with httpx.Client(base_url=web.base) as http:
        assert post_login(http, web.base, link).headers["location"] == "/"
        assert http.get("/").status_code == 200
    with httpx.Client(base_url=web.base) as http:
        again = post_login(http, web.base, link)
        assert again.status_code == 401 and "this login link was used already" in again.text
        assert not http.cookies and http.get("/").status_code == 303
        refused = {
            "expired": make_login_code(token, now=time.time() - CODE_LIFETIME - 1),
            "not from this daemon": make_login_code("another daemon's token"),
            "not a login link": "1.2",
        }
        for why, code in refused.items():
            answer = http.post("/login", data={"code": code}, headers={"Origin": web.base})
            assert answer.status_code == 401 and why in answer.text, why
        cross_site = http.post(
            "/login", data={"code": make_login_code(token)}, headers={"Origin": "http://evil.example"}
        )
        assert cross_site.status_code == 403 and not http.cookies


def test_the_token_logs_in_and_a_restart_revokes_it(daemon: DaemonHarness) -> None:
    port = free_port()
    write_config(daemon, f'web_listen_addr = "127.0.0.1:{port}"\n')
    daemon.client().vms.list()
    token_file = daemon.runtime / "web-token"
    token = token_file.read_text().strip()
    base = f"http://127.0.0.1:{port}"
    link = login_link(daemon)
    with httpx.Client(base_url=base) as http:
        wrong = http.post("/login", data={"token": token[:-1] + "x"}, headers={"Origin": base})
        assert wrong.status_code == 401 and "Wrong token" in wrong.text
        assert http.post("/login", data={"token": token}, headers={"Origin": "http://evil.example"}).status_code == 403
        ok = http.post("/login", data={"token": token}, headers={"Origin": base})
        assert ok.status_code == 303 and f"banger_session_{port}" in http.cookies
        assert "HttpOnly" in ok.headers["set-cookie"] and "SameSite=strict" in ok.headers["set-cookie"]
        assert http.get("/").status_code == 200
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http:
        assert http.get("/plugins").status_code == 200
    # A new daemon, a new token: the old token and an unused old link stop working.
    daemon.stop()
    daemon.client().vms.list()
    assert token_file.read_text().strip() != token
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http:
        assert http.get("/").status_code == 303
        stale = post_login(http, base, link)
        assert stale.status_code == 401 and "not from this daemon" in stale.text


def test_allow_remote_changes_where_not_who(daemon: DaemonHarness) -> None:
    """web_allow_remote only permits a non-loopback address (not listened on here); the login is the same."""
    port = free_port()
    write_config(daemon, f'web_listen_addr = "127.0.0.1:{port}"\nweb_allow_remote = true\n')
    daemon.client().vms.list()
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base) as http:
        assert http.get("/").headers["location"] == "/login"
        assert post_login(http, base, login_link(daemon)).status_code == 303
        assert http.get("/").status_code == 200


def test_login_in_the_browser(daemon: DaemonHarness, browser: webdriver.Chrome) -> None:
    port = free_port()
    write_config(daemon, f'web_listen_addr = "127.0.0.1:{port}"\n')
    daemon.client().vms.list()
    token = (daemon.runtime / "web-token").read_text().strip()
    base = f"http://127.0.0.1:{port}"
    browser.get(base + "/doctor")
    assert browser.title == "Log in · banger"
    assert str(daemon.runtime / "web-token") in browser.find_element(By.TAG_NAME, "main").text
    browser.find_element(By.ID, "token").send_keys("not the token\n")
    wait_main_text(browser, "Wrong token.")
    browser.find_element(By.ID, "token").send_keys(token + "\n")
    wait_title(browser, "Virtual machines · banger")
    browser.find_element(By.CSS_SELECTOR, "form.logout button").click()
    wait_title(browser, "Log in · banger")
    browser.get(base + "/")
    assert browser.title == "Log in · banger"
    # The owner's one click: the link logs in, and its code leaves the address bar.
    link = login_link(daemon)
    browser.get(link)
    wait_title(browser, "Virtual machines · banger")
    assert browser.current_url == base + "/"
    browser.back()  # the history entry of the link was rewritten to plain /login
    assert browser.current_url == base + "/login"
    browser.get(base + "/")
    wait_title(browser, "Virtual machines · banger")
    browser.find_element(By.CSS_SELECTOR, "form.logout button").click()
    wait_title(browser, "Log in · banger")
    browser.get(link)
    wait_main_text(browser, "used already")
    assert browser.title == "Log in · banger"


def test_banger_web_opens_the_link_or_says_why_not(daemon: DaemonHarness, tmp_path: Path) -> None:
    off = subprocess.run([BIN / "banger", "web"], env=daemon.env, capture_output=True, text=True)
    assert (off.returncode, off.stdout) == (1, "")
    assert off.stderr == (
        'banger: error: the web UI is off: set web_listen_addr = "127.0.0.1:7777" in config.toml, '
        "then `banger daemon stop`\n"
    )
    port = free_port()
    write_config(daemon, f'web_listen_addr = "127.0.0.1:{port}"\n')
    daemon.stop()
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {opened}\n')
    browser.chmod(0o700)
    done = subprocess.run(
        [BIN / "banger", "web", "--open"], env={**daemon.env, "BROWSER": str(browser)}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert opened.read_text() == done.stdout
    assert done.stdout.startswith(f"http://127.0.0.1:{port}/login#code=")
    # No token to sign with (here: removed; for another user: unreadable): one line, no link.
    token_file = daemon.runtime / "web-token"
    token_file.unlink()
    missing = subprocess.run([BIN / "banger", "web"], env=daemon.env, capture_output=True, text=True)
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr == (
        f"banger: error: cannot read the web UI's token {token_file}: No such file or directory; "
        "run banger web as the user bangerd runs as\n"
    )


# -- bad settings: the API still starts, the log and doctor say why --------------


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (
            '"0.0.0.0:{port}"',
            "web_listen_addr '0.0.0.0:{port}' is not a loopback address: use 127.0.0.1:7777",
        ),
        ('"127.0.0.1"', "web_listen_addr '127.0.0.1': expected IP:PORT"),
        ('"web.example:{port}"', "web_listen_addr 'web.example:{port}': expected IP:PORT"),
    ],
)
def test_unusable_listen_address_is_refused_and_the_api_runs(
    daemon: DaemonHarness, setting: str, expected: str
) -> None:
    port = free_port()
    write_config(daemon, f"web_listen_addr = {setting.format(port=port)}\n")
    assert daemon.client().vms.list() == []
    line = expected.format(port=port)
    assert f"web UI not started: {line}" in daemon_log(daemon)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/")
    doctor = subprocess.run([BIN / "banger", "doctor", "--json"], env=daemon.env, capture_output=True, text=True)
    row = next(r for r in json.loads(doctor.stdout)["checks"] if r["name"] == "web-ui")
    assert row["status"] == "fail" and line in row["summary"] and row["blocks_vm_run"] is False


def test_port_in_use_is_logged_and_the_api_runs(daemon: DaemonHarness) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        write_config(daemon, f'web_listen_addr = "127.0.0.1:{port}"\n')
        assert daemon.client().vms.list() == []
        line = f"not started: web_listen_addr '127.0.0.1:{port}': Address already in use"
        assert f"web UI {line}" in daemon_log(daemon)
        assert daemon.client().daemon.status().web_ui == line
        status = subprocess.run([BIN / "banger", "daemon", "status"], env=daemon.env, capture_output=True, text=True)
        assert f"  web UI {line}\n" in status.stdout
        web = subprocess.run([BIN / "banger", "web"], env=daemon.env, capture_output=True, text=True)
        assert (web.returncode, web.stdout) == (1, "")
        assert web.stderr == f"banger: error: the web UI is {line} (see docs/web-ui.md)\n"


def test_web_ui_is_off_by_default(daemon: DaemonHarness) -> None:
    assert daemon.client().vms.list() == []
    assert "web UI" not in daemon_log(daemon)
    doctor = subprocess.run([BIN / "banger", "doctor", "--json"], env=daemon.env, capture_output=True, text=True)
    row = next(r for r in json.loads(doctor.stdout)["checks"] if r["name"] == "web-ui")
    assert row["status"] == "info" and row["summary"].startswith("off")
