#!/usr/bin/env bash
# Prepares a Debian 12 host for berth and builds it. Idempotent: each step is skipped when done.
# Usage: scripts/setup.sh [--test]   (--test also installs what the test suite needs)
set -euo pipefail

cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "setup: berth runs containers and must be set up as root (try: sudo $0)" >&2
  exit 1
fi

# Debian 12 ships Node.js 18, which berth cannot run on; Node.js 20.5 or newer must be installed.
if ! command -v node >/dev/null || ! node -e 'const [major, minor] = process.versions.node.split(".").map(Number); process.exit(major > 20 || (major === 20 && minor >= 5) ? 0 : 1)'; then
  echo "setup: berth needs Node.js 20.5 or newer with npm (found: $(node --version 2>/dev/null || echo none)); install it, then run this again" >&2
  exit 1
fi

packages=(runc crun conmon containernetworking-plugins iproute2 iptables util-linux)
if [[ "${1-}" == "--test" ]]; then
  packages+=(docker-registry busybox-static apache2-utils skopeo umoci containerd zstd openssl)
fi

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Debian docker-registry package starts a registry on :5000 where an init system runs; the
# tests start their own registries on loopback, so the packaged one is not needed.

if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "setup: installing npm dependencies"
  npm ci --no-audit --no-fund --loglevel=error
fi

echo "setup: building"
npm run --silent build

# The `berth` command on PATH, pointing at this checkout's build.
chmod +x core/dist/src/cli.js
ln -sfn "$PWD/core/dist/src/cli.js" /usr/local/bin/berth

scripts/prepare-host.sh
