"""Shell lines that give a test's mount namespace a private host: what a live install writes stays in the test.

Run as root inside ``unshare --mount --propagation private`` with ``$T/up`` an empty directory:
``/etc``, ``/opt``, ``/var`` and ``/root`` become overlays on a tmpfs (the host's directories stay as
they are; an overlay's root takes the upper directory's mode), and ``/run`` a fresh tmpfs holding
``/run/systemd/system`` (what ``sd_booted()`` looks for).
"""

PRIVATE_HOST_MOUNTS = r"""
mount -t tmpfs banger-test "$T/up"
for d in etc opt var root; do
  mkdir "$T/up/$d" "$T/up/$d.work"
  mount -t overlay banger-test -o "lowerdir=/$d,upperdir=$T/up/$d,workdir=$T/up/$d.work" "/$d"
done
# The venvs' interpreter may live under /root (pyenv on the lab machines); bangerd runs as another user.
chmod 0711 /root
mount -t tmpfs banger-test /run
mkdir -p /run/systemd/system
"""
