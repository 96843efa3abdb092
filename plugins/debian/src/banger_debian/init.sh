#!/bin/sh
# banger initramfs /init: boot protocol v1 (banger_hookspecs.boot).
#
# vda = image (read-only, shared), vdb = the VM's overlay disk, vdc = its work
# disk. Builds an overlayfs root, gives the VM its network and identity, and
# switch_roots into the image's /sbin/init. A fatal error prints one
# "banger-init: ..." line and powers the VM off: it never hangs.

export PATH=/bin
PROTOCOL=1
NEWROOT=/newroot
LOWER=/mnt/image
RW=/mnt/overlay

fail() {
	echo "banger-init: $*"
	poweroff -f
	# No power-off support (e.g. no ACPI): PID 1 exits, the kernel panics,
	# and panic=-1 turns that into a reboot, which stops the VMM.
	sleep 1
	exit 1
}

# Wait up to ~10 s for a path to appear; device probing is asynchronous.
wait_for() {
	tries=0
	while [ ! -e "$1" ]; do
		tries=$((tries + 1))
		[ "$tries" -gt 200 ] && return 1
		sleep 0.05
	done
	return 0
}

mount -t devtmpfs -o mode=0755,nosuid devtmpfs /dev || fail "cannot mount devtmpfs on /dev"
mount -t proc -o nosuid,nodev,noexec proc /proc || fail "cannot mount /proc"
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys || fail "cannot mount /sys"

set -f # no globbing from here on: command-line values are data
proto="" ip_cidr="" gateway="" dns="" name=""
read -r cmdline </proc/cmdline
for arg in $cmdline; do
	case "$arg" in
	banger.proto=*) proto="${arg#*=}" ;;
	banger.ip=*) ip_cidr="${arg#*=}" ;;
	banger.gw=*) gateway="${arg#*=}" ;;
	banger.dns=*) dns="${arg#*=}" ;;
	banger.hostname=*) name="${arg#*=}" ;;
	esac
done
[ "$proto" = "$PROTOCOL" ] ||
	fail "kernel command line asks for boot protocol '${proto:-none}' but this initramfs speaks banger.proto=$PROTOCOL: pull a matching kernel (banger kernel pull)"
case "$name" in
"" | -* | *[!a-z0-9-]*) fail "banger.hostname '$name' is not a DNS label (a-z, 0-9, '-')" ;;
esac

# Modules are stored as NN-name.ko in dependency order (computed from modules.dep).
set +f
for module in /lib/modules/*.ko; do
	[ -e "$module" ] || continue
	insmod "$module" || fail "cannot load kernel module ${module##*/}"
done
set -f

if [ -n "$ip_cidr" ]; then
	wait_for /sys/class/net/eth0 || fail "no network interface eth0 appeared (is the NIC a virtio-net device?)"
	ip link set lo up
	ip addr add "$ip_cidr" dev eth0 || fail "cannot set address $ip_cidr on eth0 (banger.ip)"
	ip link set eth0 up || fail "cannot bring eth0 up"
	if [ -n "$gateway" ]; then
		ip route add default via "$gateway" dev eth0 || fail "cannot add default route via $gateway (banger.gw)"
	fi
fi

wait_for /dev/vda || fail "image disk /dev/vda did not appear: attach image, overlay and work disks in this order"
wait_for /dev/vdb || fail "overlay disk /dev/vdb did not appear: attach image, overlay and work disks in this order"
wait_for /dev/vdc || fail "work disk /dev/vdc did not appear: attach image, overlay and work disks in this order"

# noload: never replay a journal on the shared image, whatever state it is in.
mount -t ext4 -o ro,noload /dev/vda "$LOWER" || fail "cannot mount the image /dev/vda read-only as ext4"
mount -t ext4 -o noatime /dev/vdb "$RW" || fail "cannot mount the overlay disk /dev/vdb as ext4"

# The host stages identity files as its own (unprivileged) user and mkfs.ext4 -d
# keeps that uid. Overlayfs shows upper directories with their own owner and mode,
# so they must be root's before the first mount. Once fixed, later boots skip this.
if [ "$(stat -c %u "$RW/upper" 2>/dev/null)" != 0 ]; then
	mkdir -p "$RW/upper" "$RW/work"
	for path in "$RW" "$RW/upper" "$RW/work" "$RW/upper/etc" "$RW/upper/etc/ssh"; do
		[ -d "$path" ] && { chown 0:0 "$path" && chmod 0755 "$path" || fail "cannot fix owner of $path"; }
	done
	[ -d "$RW/work" ] && chmod 0700 "$RW/work"
	for path in etc/hostname etc/machine-id etc/ssh/ssh_host_ed25519_key.pub; do
		[ -f "$RW/upper/$path" ] && { chown 0:0 "$RW/upper/$path" && chmod 0644 "$RW/upper/$path"; }
	done
	key="$RW/upper/etc/ssh/ssh_host_ed25519_key"
	[ -f "$key" ] && { chown 0:0 "$key" && chmod 0600 "$key" || fail "cannot protect the ssh host key"; }
fi
mkdir -p "$RW/upper" "$RW/work" || fail "cannot create upper/ and work/ on the overlay disk"

mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$RW/upper,workdir=$RW/work" "$NEWROOT" ||
	fail "cannot mount the overlay root (is the overlay module loaded?)"
# /sbin/init is usually an absolute symlink, which only resolves after switch_root.
[ -L "$NEWROOT/sbin/init" ] || [ -x "$NEWROOT/sbin/init" ] || fail "the image has no /sbin/init"

# systemd keeps a /run that is already mounted; the image and overlay mounts live
# under it so they stay reachable (and are not hidden by a fresh /run).
mount -t tmpfs -o mode=0755,nosuid,nodev,size=20% tmpfs "$NEWROOT/run" || fail "cannot mount tmpfs on /run"
mkdir -p "$NEWROOT/run/banger/image" "$NEWROOT/run/banger/overlay"
mount --move "$LOWER" "$NEWROOT/run/banger/image" || fail "cannot move the image mount under /run"
mount --move "$RW" "$NEWROOT/run/banger/overlay" || fail "cannot move the overlay disk mount under /run"

mount -t ext4 -o noatime /dev/vdc "$NEWROOT/root" || fail "cannot mount the work disk /dev/vdc on /root"
if [ "$(stat -c %u "$NEWROOT/root")" != 0 ]; then
	chown -R 0:0 "$NEWROOT/root" || fail "cannot make the work disk root's"
fi
chmod 0700 "$NEWROOT/root"
if [ -d "$NEWROOT/root/.ssh" ]; then
	# sshd's StrictModes refuses keys in group/world-writable places.
	chmod 0700 "$NEWROOT/root/.ssh"
	[ -f "$NEWROOT/root/.ssh/authorized_keys" ] && chmod 0600 "$NEWROOT/root/.ssh/authorized_keys"
fi

hostname "$name"
[ "$(cat "$NEWROOT/etc/hostname" 2>/dev/null)" = "$name" ] || echo "$name" >"$NEWROOT/etc/hostname"
if [ -n "$dns" ]; then
	rm -f "$NEWROOT/etc/resolv.conf"
	echo "nameserver $dns" >"$NEWROOT/etc/resolv.conf" || fail "cannot write /etc/resolv.conf"
fi

for fs in dev proc sys; do
	mount --move "/$fs" "$NEWROOT/$fs" || fail "cannot move /$fs into the new root"
done

# The guest agent (host channel: virtio-serial / vsock, never the network) runs with the
# image's python3 from /run (tmpfs: the image is untouched), before the image's sshd,
# whatever the image. An image without python3 runs without it.
AGENT=/run/banger/agent
if [ -L "$NEWROOT/usr/bin/python3" ] || [ -e "$NEWROOT/usr/bin/python3" ]; then
	mkdir -p "$NEWROOT/run/banger"
	cat /banger-agent >"$NEWROOT$AGENT" && chmod 0700 "$NEWROOT$AGENT" ||
		fail "cannot install the guest agent in /run/banger"
	case "$(readlink "$NEWROOT/sbin/init")" in
	*systemd*)
		# systemd reads runtime units from /run/systemd/system at start: it runs the agent
		# early (no default dependencies), before sshd, and restarts it if it ever dies.
		units="$NEWROOT/run/systemd/system"
		mkdir -p "$units/sysinit.target.wants"
		cat >"$units/banger-agent.service" <<-UNIT
			[Unit]
			Description=banger guest agent (host channel only)
			DefaultDependencies=no
			Before=sysinit.target ssh.service sshd.service
			[Service]
			ExecStart=/usr/bin/python3 -I -S $AGENT
			Restart=always
			RestartSec=1
		UNIT
		ln -s ../banger-agent.service "$units/sysinit.target.wants/banger-agent.service"
		;;
	*)
		# Any other init: start it now, in its own session (a console hang-up must not reach
		# it), and wait (~2 s at most) until it has entered the new root, because switch_root
		# then empties this initramfs and moves $NEWROOT away.
		setsid chroot "$NEWROOT" /usr/bin/python3 -I -S "$AGENT" \
			<"$NEWROOT/dev/null" >"$NEWROOT/run/banger/agent.log" 2>&1 &
		agent=$!
		new_root_id=$(stat -c %d:%i "$NEWROOT")
		tries=0
		while [ "$(stat -L -c %d:%i "$NEWROOT/proc/$agent/root" 2>"$NEWROOT/dev/null")" != "$new_root_id" ]; do
			tries=$((tries + 1))
			if [ "$tries" -gt 100 ]; then
				echo "banger-init: the guest agent did not start (see /run/banger/agent.log)"
				break
			fi
			sleep 0.02
		done
		;;
	esac
else
	echo "banger-init: the image has no /usr/bin/python3: no guest agent in this VM"
fi
exec switch_root "$NEWROOT" /sbin/init
