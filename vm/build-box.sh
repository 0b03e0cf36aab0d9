#!/usr/bin/env bash
# Build the harness's Debian bookworm VM box offline, from the Debian mirror this machine uses.
#
#   vm/build-box.sh [--force]      prints the box directory on stdout
#
# Output: vm/.cache/box-<hash of this script>/ holding
#   box.img      qcow2 root filesystem (ext4, no partition table: root=/dev/vda)
#   vmlinuz initrd.img   the cloud kernel and a small initramfs, booted directly (no bootloader)
#   id_ed25519   the harness's SSH key (its .pub is authorized for `vagrant` and `root` in the image)
#   metadata.json Vagrantfile wharfie-bookworm.box   the same files as a vagrant-libvirt box
# and the symlink vm/.cache/box -> box-<hash>. A box whose directory exists is reused: edit this
# script (or pass --force) to rebuild; older box-* directories are removed.
#
# Environment: DEBIAN_MIRROR (default: the first Debian URI in /etc/apt), SUITE (bookworm),
# DISK_SIZE (virtual disk size, 8G).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache="$here/.cache"
suite=${SUITE:-bookworm}
disk_size=${DISK_SIZE:-8G}
hash=$( { cat "$0"; echo "$suite $disk_size"; } | sha256sum | cut -c1-12)
out="$cache/box-$hash"
[ "$(id -u)" -eq 0 ] || { echo "build-box.sh: must run as root (debootstrap)" >&2; exit 1; }

if [ "${1:-}" != "--force" ] && [ -f "$out/.complete" ]; then
  ln -sfn "box-$hash" "$cache/box"
  echo "$out"; exit 0
fi

mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  # deb822 sources first (Debian 12 default), then one-line sources; skip the security archive
  mirror=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' \
           | grep -v security | grep -E '/debian/?$' | head -1 || true)
  [ -n "$mirror" ] || mirror=$(grep -hsE '^deb +(\[[^]]*\] +)?https?://' /etc/apt/sources.list \
           /etc/apt/sources.list.d/*.list | sed -E 's/^deb +(\[[^]]*\] +)?//' | awk '{print $1}' \
           | grep -v security | grep -E '/debian/?$' | head -1 || true)
  [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
fi

# What the guest needs at test time, so that nothing is fetched inside it: the boot and SSH
# basics, Python with venv (wharfie's venv; its pip dependencies come as a wheelhouse), the
# kernel features' userland (iproute2, kmod for module autoloading, iptables via docker.io),
# busybox-static (the test image), docker.io (the CLI suites drive the real docker client;
# its daemons are masked below), kexec-tools (vm/cgroup.sh switches a running VM's hierarchy) and
# qemu-guest-agent (how vagrant-libvirt learns the VM is up without a libvirt NAT network).
packages=(
  linux-image-cloud-amd64 initramfs-tools zstd kmod systemd-sysv udev dbus
  openssh-server sudo ca-certificates
  python3 python3-venv python3-pip rsync iproute2 iputils-ping procps psmisc
  busybox-static docker.io kexec-tools util-linux qemu-guest-agent
)

mkdir -p "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
rootfs="$work/rootfs"
cleanup() {
  for m in proc sys dev/pts dev; do mountpoint -q "$rootfs/$m" 2>/dev/null && umount -l "$rootfs/$m"; done
  rm -rf "$work"
}
trap cleanup EXIT
log() { echo "build-box.sh: $*" >&2; }
t0=$SECONDS

log "debootstrap $suite from $mirror"
# INITRD=No: the kernel's postinst skips its initramfs; ours is made once, below, with MODULES=list
INITRD=No DEBIAN_FRONTEND=noninteractive debootstrap --variant=minbase \
  --include="$(IFS=,; echo "${packages[*]}")" "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -30 "$work/debootstrap.log" >&2; exit 1; }
log "debootstrap done in $((SECONDS - t0)) s"

# --- system configuration ------------------------------------------------------------------
echo wharfie-vm >"$rootfs/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 wharfie-vm\n::1 localhost ip6-localhost ip6-loopback\n' >"$rootfs/etc/hosts"
echo '/dev/vda / ext4 rw,relatime 0 1' >"$rootfs/etc/fstab"
# qemu user-mode networking's resolver; only used when the VM is allowed out (VM_NET=nat)
echo 'nameserver 10.0.2.3' >"$rootfs/etc/resolv.conf"

mkdir -p "$rootfs/etc/systemd/network"
cat >"$rootfs/etc/systemd/network/80-dhcp.network" <<'EOF'
[Match]
Name=eth* en*

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF

# The Vagrant backend's first NIC is a loopback-only UDP tunnel (see the root Vagrantfile): it
# only exists so that vagrant-libvirt, asking the guest agent, finds an address on it.
cat >"$rootfs/etc/systemd/network/10-vagrant-tunnel.network" <<'EOF'
[Match]
MACAddress=52:54:00:77:68:01

[Network]
Address=169.254.77.2/16
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF

systemctl_in() { chroot "$rootfs" systemctl "$@" >/dev/null 2>&1 || true; }
systemctl_in enable systemd-networkd.service ssh.service
systemctl_in set-default multi-user.target
# under TCG every unit costs boot time: nothing that waits, polls or is not needed for the tests
systemctl_in mask systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer \
  e2scrub_all.timer e2scrub_reap.service fstrim.timer dpkg-db-backup.timer \
  docker.service docker.socket containerd.service kexec-load.service kexec.service \
  getty@tty1.service systemd-hwdb-update.service

# SSH: ed25519 host key generated on first boot. Debian's unit runs `sshd -t` as its first
# ExecStartPre, which fails without host keys, so the list is reset before ssh-keygen is added.
rm -f "$rootfs"/etc/ssh/ssh_host_*
mkdir -p "$rootfs/etc/systemd/system/ssh.service.d"
cat >"$rootfs/etc/systemd/system/ssh.service.d/hostkey.conf" <<'EOF'
[Service]
ExecStartPre=
ExecStartPre=/bin/sh -c 'test -s /etc/ssh/ssh_host_ed25519_key || ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key'
ExecStartPre=/usr/sbin/sshd -t
EOF
cat >"$rootfs/etc/ssh/sshd_config.d/wharfie-vm.conf" <<'EOF'
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
PermitRootLogin prohibit-password
EOF

# Users: `vagrant` with passwordless sudo (the Vagrant convention), keyed with the harness's own
# key and Vagrant's well-known insecure public key (Vagrant replaces that one on first `up`).
ssh-keygen -q -t ed25519 -N "" -C wharfie-vm-harness -f "$work/id_ed25519"
vagrant_insecure='ssh-rsa AAAAB3NzaC1yc2EAAAABIwAAAQEA6NF8iallvQVp22WDkTkyrtvp9eWW6A8YVr+kz4TjGYe7gHzIw+niNltGEFHzD8+v1I2YJ6oXevct1YeS0o9HZyN1Q9qgCgzUFtdOKLv6IedplqoPkcmF0aYet2PkEDo3MlTBckFXPITAMzF8dJSIFo9D8HfdOV0IAdx4O7PtixWKn5y2hMNG0zQPyUecp4pzC6kivAIhyfHilFR61RGL+GPXQ2MWZWFYbAGjyiYJnAmCP3NOTd0jMZEnDkbUvxhMmBYSdETk1rRgm+R4LOzFUGaHqHDLKLX+FIPKcF96hrucXzcWyLbIbEgE98OHlnVYCzRdK8jlqm8tehUc9c9WhQ== vagrant insecure public key'
chroot "$rootfs" useradd -m -s /bin/bash -u 1000 vagrant
for home in "$rootfs/home/vagrant" "$rootfs/root"; do
  install -d -m 700 "$home/.ssh"
  { cat "$work/id_ed25519.pub"; echo "$vagrant_insecure"; } >"$home/.ssh/authorized_keys"
  chmod 600 "$home/.ssh/authorized_keys"
done
chroot "$rootfs" chown -R vagrant:vagrant /home/vagrant/.ssh
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >"$rootfs/etc/sudoers.d/vagrant"
chmod 440 "$rootfs/etc/sudoers.d/vagrant"
mkdir -p "$rootfs/vagrant"

# --- kernel and initramfs ----------------------------------------------------------------
# virtio_blk is a module in Debian's cloud kernel, so an initramfs is needed. MODULES=list:
# MODULES=dep would inspect the *build host's* disk from inside the chroot.
sed -i 's/^MODULES=.*/MODULES=list/' "$rootfs/etc/initramfs-tools/initramfs.conf"
printf 'virtio_pci\nvirtio_blk\nvirtio_net\next4\n' >>"$rootfs/etc/initramfs-tools/modules"
kver=$(basename "$(ls -d "$rootfs"/lib/modules/* | head -1)")
mount -t proc proc "$rootfs/proc"
rm -f "$rootfs/boot/initrd.img-$kver"
chroot "$rootfs" update-initramfs -c -k "$kver" >"$work/initramfs.log" 2>&1 \
  || { cat "$work/initramfs.log" >&2; exit 1; }
umount "$rootfs/proc"

mkdir -p "$work/box"
cp "$rootfs/boot/vmlinuz-$kver" "$work/box/vmlinuz"
cp "$rootfs/boot/initrd.img-$kver" "$work/box/initrd.img"
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/log/*.log
: >"$rootfs/etc/machine-id"   # a fresh one per boot (systemd-machine-id-setup)

# --- image -------------------------------------------------------------------------------
log "mkfs.ext4 -d ($disk_size) and qcow2"
mkfs.ext4 -q -F -L wharfie-root -d "$rootfs" "$work/box.raw" "$disk_size" >/dev/null
qemu-img convert -O qcow2 "$work/box.raw" "$work/box/box.img"
rm -f "$work/box.raw"
cp "$work/id_ed25519" "$work/id_ed25519.pub" "$work/box/"
virtual_size=$(( $(qemu-img info --output=json "$work/box/box.img" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])') / 1024 / 1024 / 1024 ))
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %s}\n' "$virtual_size" \
  >"$work/box/metadata.json"
cat >"$work/box/Vagrantfile" <<'EOF'
# The box's own defaults: boot the kernel beside this file directly (the image has no bootloader).
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.kernel = File.join(File.dirname(__FILE__), "vmlinuz")
    libvirt.initrd = File.join(File.dirname(__FILE__), "initrd.img")
    libvirt.cmd_line = "root=/dev/vda rw console=ttyS0 net.ifnames=0"
  end
end
EOF
echo "$kver" >"$work/box/kernel-version"
# tells a rebuilt box (new SSH key) from the one Vagrant already imported under the same name
echo "$hash $(date -u +%Y%m%dT%H%M%SZ)" >"$work/box/build-id"
(cd "$work/box" && tar -cf wharfie-bookworm.box metadata.json Vagrantfile box.img vmlinuz initrd.img)

# --- publish -----------------------------------------------------------------------------
rm -rf "$out"
mv "$work/box" "$out"
touch "$out/.complete"
ln -sfn "box-$hash" "$cache/box"
for old in "$cache"/box-*; do [ "$old" = "$out" ] || rm -rf "$old"; done
log "box $out ready in $((SECONDS - t0)) s ($(du -sh "$out" | cut -f1))"
echo "$out"
