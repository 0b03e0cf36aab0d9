#!/usr/bin/env bash
# Install the host packages the VM harness needs (Debian 12 / Ubuntu 22.04+), idempotently.
#   vm/install-host.sh             plain-qemu backend: qemu, qemu-img, debootstrap, rsync
#   vm/install-host.sh --vagrant   also Vagrant + vagrant-libvirt + libvirt (about 4 min, 270 packages)
# Python packages (fabric, pytest-testinfra, python-vagrant) come from `pip install -e ".[vm]"`.
set -euo pipefail
sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"

# binary -> package; only missing ones are installed, so a prepared machine costs nothing
pkgs=()
need() { command -v "$1" >/dev/null 2>&1 || pkgs+=("$2"); }
need qemu-system-x86_64 qemu-system-x86
need qemu-img qemu-utils
need debootstrap debootstrap
need cpio cpio
need rsync rsync
need ssh openssh-client
need ssh-keygen openssh-client
need mkfs.ext4 e2fsprogs
need zstd zstd
if [ "${1:-}" = "--vagrant" ]; then
  need vagrant vagrant
  [ -d /usr/share/rubygems-integration/all/gems ] && ls /usr/share/rubygems-integration/all/gems \
    | grep -q '^vagrant-libvirt' || pkgs+=(vagrant-libvirt)
  need libvirtd libvirt-daemon-system
  need virsh libvirt-clients
  # the vagrant-libvirt management network needs these even without Recommends
  need dnsmasq dnsmasq-base
  need iptables iptables
fi
[ ${#pkgs[@]} -eq 0 ] && exit 0

mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
echo "vm/install-host.sh: installing ${pkgs[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-y -q -o DPkg::Lock::Timeout=300)
# the plain-qemu set is small without Recommends (about 20 s); Vagrant wants its Recommends
[ "${1:-}" = "--vagrant" ] || apt_opts+=(--no-install-recommends)
if ! $sudo_cmd apt-get install "${apt_opts[@]}" "${pkgs[@]}" >/dev/null 2>&1; then
  $sudo_cmd apt-get update -q -o DPkg::Lock::Timeout=300 >/dev/null
  $sudo_cmd apt-get install "${apt_opts[@]}" "${pkgs[@]}" >/dev/null
fi
