#!/usr/bin/env bash
# Switch a *running* VM's cgroup hierarchy by kexec-ing the same kernel with another command line
# (the box boots its kernel directly, so there is no bootloader entry to edit as youki's grubby does).
#   vm/cgroup.sh v1|v2
# Returns at once; the VM reboots a second later (SSH drops, then comes back in about 20 s).
# The harness itself boots the wanted hierarchy directly: python -m vm test --cgroup v1.
set -euo pipefail
want=${1:?usage: cgroup.sh v1|v2}
case "$want" in v1) flag=0 ;; v2) flag=1 ;; *) echo "cgroup.sh: v1 or v2" >&2; exit 2 ;; esac
cmdline=$(sed -E 's/ ?systemd\.unified_cgroup_hierarchy=[01]//g; s/ ?BOOT_IMAGE=[^ ]*//' /proc/cmdline)
kexec -l "/boot/vmlinuz-$(uname -r)" --initrd="/boot/initrd.img-$(uname -r)" \
  --append="$cmdline systemd.unified_cgroup_hierarchy=$flag"
systemd-run --on-active=1 --timer-property=AccuracySec=100ms systemctl kexec >/dev/null 2>&1
echo "cgroup.sh: rebooting into cgroup $want"
