#!/usr/bin/env bash
# Installs, idempotently, what Plexus' tests and demo need on Debian.
# Usage: PIP_PACKAGES="name==version ..." scripts/setup.sh PACKAGE...
# (the Makefile passes both lists). Needs root for apt-get; does nothing when
# everything is already there.
set -euo pipefail

missing=()
for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# PyPI packages (virtme-ng for the kernel matrix): installed when the
# package is missing or at another version.
for spec in ${PIP_PACKAGES:-}; do
    name="${spec%%==*}"
    want="${spec#*==}"
    have="$(python3 -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)"
    [[ "$have" == "$want" ]] && continue
    if ! python3 -m pip --version >/dev/null 2>&1; then
        echo "setup: installing python3-pip"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
    fi
    echo "setup: installing $spec from PyPI"
    # Debian's own python3 refuses system-wide installs (PEP 668) unless asked.
    python3 -m pip install -q "$spec" 2>/dev/null ||
        python3 -m pip install -q --break-system-packages "$spec"
done

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found: install Rust 1.95 or newer (rustup) first" >&2
    exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "setup: installing cargo-nextest from crates.io"
    cargo install --locked cargo-nextest
fi
