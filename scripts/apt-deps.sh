#!/usr/bin/env bash
# Install the Debian packages that `make test` needs, only when some are missing.
#
#   scripts/apt-deps.sh [PACKAGE ...]     (default: the list below)
#
# A no-op (no apt-get update, no root needed) when every package is installed. Otherwise it
# runs `apt-get update` once and `apt-get install -y`, as root or through `sudo -n`; it never
# waits for input (CI=true, no stdin). Services that a package would start on install
# (postgresql's "main" cluster, redis-server on 6379) are kept from starting: the tests start
# their own on loopback (tests/services.py). EDGEPLANE_SKIP_APT=1 skips this step.
set -euo pipefail

# postgresql, redis-server: test services. chromium: browser tests. caddy: the TLS proxy of the
# production-stack test (tests/test_production_stack.py). python3-venv: `make venv`.
PACKAGES=("$@")
if [ ${#PACKAGES[@]} -eq 0 ]; then
    PACKAGES=(postgresql redis-server chromium caddy python3-venv)
fi

if [ "${EDGEPLANE_SKIP_APT:-0}" = "1" ]; then
    exit 0
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "install ok installed" ]; then
        missing+=("$pkg")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "apt-deps: missing Debian packages: ${missing[*]}" >&2
    echo "apt-deps: install them as root (apt-get install -y ${missing[*]})," \
        "or set EDGEPLANE_SKIP_APT=1 to go on without them." >&2
    exit 1
fi

echo "apt-deps: installing ${missing[*]}" >&2

# Keep package scripts from starting services, the way Docker images do, unless a policy
# is already in place; the temporary policy is removed on any exit.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    trap '"${as_root[@]}" rm -f "$policy"' EXIT
    printf '#!/bin/sh\n# Temporary, from edgeplane scripts/apt-deps.sh.\nexit 101\n' \
        | "${as_root[@]}" tee "$policy" >/dev/null
    "${as_root[@]}" chmod 755 "$policy"
fi

export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q </dev/null
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" </dev/null
