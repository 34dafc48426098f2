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
