#!/usr/bin/env bash
# Build the libcni conformance runner offline, in GOPATH mode, against
# Debian's libcni source (golang-github-appc-cni-dev).
#
# Usage: e2e/conformance/build.sh [OUT_DIR]   (default: e2e/conformance/bin)
# Prints the path of the binary on stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/bin}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
bin="$out/cni-conformance"
src="$here/main.go"

gopath="${CNI_CONFORMANCE_GOPATH:-/usr/share/gocode}"
libcni="$gopath/src/github.com/containernetworking/cni/libcni"

# Test processes run in parallel (nextest): one builds, the others wait and
# then find the binary fresh.
exec 9>"$out/.build.lock"
flock 9

if [[ -x "$bin" && "$bin" -nt "$src" && "$bin" -nt "$0" ]]; then
    echo "$bin"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "build.sh: 'go' not found; run make setup (or: apt-get install golang-go golang-github-appc-cni-dev)" >&2
    exit 1
fi
if [[ ! -f "$libcni/api.go" ]]; then
    echo "build.sh: libcni source not found at $libcni; run make setup (or: apt-get install golang-github-appc-cni-dev)" >&2
    exit 1
fi

# Offline, GOPATH mode: imports resolve from Debian's /usr/share/gocode only.
export GOPATH="$gopath"
export GO111MODULE=off
export GOFLAGS=
export GOPROXY=off
export GOCACHE="${GOCACHE:-$out/.gocache}"
export CGO_ENABLED=0

cd "$here"
go build -trimpath -o "$bin.tmp.$$" main.go
mv -f "$bin.tmp.$$" "$bin"
echo "$bin"
