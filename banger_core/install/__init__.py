"""``banger system install``: banger as two systemd services (see docs/install.md).

* :mod:`.layout`  — where each installed file lives, on the target system and in a staged ``--root``;
* :mod:`.record`  — ``/etc/banger/install.toml``, the install's own description;
* :mod:`.units`   — ``bangerd.service`` and ``bangerd-root.service``, rendered from the record;
* :mod:`.venv`    — the dedicated virtualenv under the prefix, from wheels;
* :mod:`.service` — install, status, restart and uninstall, driving ``systemctl``.
"""
