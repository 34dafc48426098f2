#!/usr/bin/env bash
# Host preparation that berth's runtimes need; safe to run more than once.
set -euo pipefail

# Hybrid cgroups (v1 controllers plus a cgroup2 mount at /sys/fs/cgroup/unified) leave hugetlb only
# on the v2 side, and crun 1.8 then fails every container. Mounting hugetlb as a v1 hierarchy
# gives crun the layout it expects.
if mountpoint -q /sys/fs/cgroup/unified && mountpoint -q /sys/fs/cgroup/memory && ! mountpoint -q /sys/fs/cgroup/hugetlb; then
  if grep -qw hugetlb /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null || grep -q '^hugetlb' /proc/cgroups; then
    mkdir -p /sys/fs/cgroup/hugetlb
    if mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb 2>/dev/null; then
      echo "prepare-host: mounted the hugetlb cgroup v1 hierarchy for crun"
    else
      echo "prepare-host: cannot mount the hugetlb cgroup v1 hierarchy; the crun handler will not work" >&2
    fi
  fi
fi

# A pod network for the quick start, installed only where no CNI config exists yet (as CRI runtime
# packages do), so an admin's own network is never replaced. BERTH_CNI_CONF_DIR overrides the
# directory for tests of this step.
cni_conf_dir="${BERTH_CNI_CONF_DIR:-/etc/cni/net.d}"
default_network="$(cd "$(dirname "$0")/.." && pwd)/plugins/cni/conf/10-berth-bridge.conflist"
if ! compgen -G "$cni_conf_dir/*.conf" >/dev/null && ! compgen -G "$cni_conf_dir/*.conflist" >/dev/null \
  && ! compgen -G "$cni_conf_dir/*.json" >/dev/null; then
  mkdir -p "$cni_conf_dir"
  install -m 0644 "$default_network" "$cni_conf_dir/"
  echo "prepare-host: installed the default pod network $cni_conf_dir/10-berth-bridge.conflist (bridge berth0, subnet 10.87.0.0/16)"
fi
