"""``banger web``: a one-time login link for the daemon's web UI (and ``--open`` to open it)."""

from __future__ import annotations

import click

from banger_core.cli.app import App, pass_app
from banger_core.cli.output import fail, warn


@click.command(name="web")
@click.option("--open", "open_browser", is_flag=True, help="Open the link in the default browser too.")
@pass_app
def cli(app: App, open_browser: bool) -> None:
    """Print a login link for the web UI: it works once, for one minute.

    Only the user bangerd runs as can make one: the link is signed with the
    daemon's token, which is in a file only that user can read.
    """
    from banger_core.client import Client
    from banger_core.common import paths
    from banger_core.common.weblogin import CODE_LIFETIME, make_login_code, token_path

    info = Client(app.env).daemon.status()
    url = info.web_url
    if not url:
        state = info.web_ui or "off"
        if state == "off":
            fail('the web UI is off: set web_listen_addr = "127.0.0.1:7777" in config.toml, then `banger daemon stop`')
        fail(f"the web UI is {state} (see docs/web-ui.md)")
    token_file = token_path(paths.socket_path(app.env).parent)  # the installed service's runtime dir too
    try:
        token = token_file.read_text().strip()
    except OSError as exc:
        fail(f"cannot read the web UI's token {token_file}: {exc.strerror}; run banger web as the user bangerd runs as")
    link = f"{url}login#code={make_login_code(token)}"
    click.echo(link)
    if open_browser:
        import webbrowser

        if not webbrowser.open(link):
            warn("banger: no browser found: open the link above yourself")
    warn(f"(the link logs in once, within {CODE_LIFETIME} s)")
