#!/usr/bin/env bash
# Smoke test of cni-conformance against Debian's reference CNI plugins
# (containernetworking-plugins in /usr/lib/cni): ptp+host-local and
# ptp+host-local+tuning for every CNI version libcni v1.1.2 knows.
#
# Needs root, iproute2, jq, and what build.sh needs. Creates one throwaway
# netns (cnicf-test-PID) and one temp dir, removes both, and checks that no
# host-side veth, cache entry or IPAM reservation is left behind.
#
# Usage: sudo e2e/conformance/smoke.sh [BIN_DIR]
#   BIN_DIR: where to build the runner (default e2e/conformance/bin)
# Env: CNI_PLUGIN_DIR (default /usr/lib/cni)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
plugins="${CNI_PLUGIN_DIR:-/usr/lib/cni}"

die() { echo "smoke: FAIL: $*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "must run as root (creates a netns and veths)"
for t in ip jq; do
    command -v "$t" >/dev/null 2>&1 || die "'$t' not found (apt-get install iproute2 jq)"
done
for p in ptp host-local tuning; do
    [[ -x "$plugins/$p" ]] || die "$plugins/$p missing (apt-get install containernetworking-plugins)"
done

runner="$("$here/build.sh" "${1:-$here/bin}" | tail -n1)"

ns="cnicf-test-$$"
nspath="/var/run/netns/$ns"
tmp="$(mktemp -d /tmp/cnicf-smoke.XXXXXX)"
cleanup() {
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

host_links() { ip -o link show | awk -F': ' '{sub(/@.*/, "", $2); print $2}' | sort; }
links_before="$(host_links)"
routes_before="$(ip route show; ip -6 route show)"
ip netns add "$ns"

pass=0
# line N of the output, as JSON
nth() { sed -n "${2}p" <<<"$1"; }
# assert a jq expression is true for a JSON line
expect() {
    local json="$1" expr="$2" what="$3"
    jq -e "$expr" >/dev/null <<<"$json" || die "$what: expected $expr, got: $json"
}

# write_conflist FILE NAME VERSION SUBNET TUNING(0|1)
write_conflist() {
    local tuning=""
    if [[ $5 == 1 ]]; then
        tuning=',{"type":"tuning","sysctl":{"net.ipv4.conf.eth0.rp_filter":"2"}}'
    fi
    cat >"$1" <<EOF
{
  "cniVersion": "$3",
  "name": "$2",
  "plugins": [
    {"type": "ptp", "ipMasq": false, "mtu": 1400,
     "ipam": {"type": "host-local", "dataDir": "$tmp/ipam",
              "ranges": [[{"subnet": "$4"}]]}}$tuning
  ]
}
EOF
}

# assert_clean NAME: nothing left in the netns, the cache or the IPAM store
assert_clean() {
    local name="$1" left
    [[ "$(ip -n "$ns" -o link show | wc -l)" == 1 ]] || die "$name: links left in netns: $(ip -n "$ns" -o link show)"
    left="$(find "$tmp/cache" -type f 2>/dev/null)"
    [[ -z "$left" ]] || die "$name: libcni cache files left: $left"
    # host-local keeps its lock and last_reserved_ip.N by design; any other
    # file is an IP reservation that DEL failed to release.
    left="$(find "$tmp/ipam" -type f ! -name lock ! -name 'last_reserved_ip.*' 2>/dev/null)"
    [[ -z "$left" ]] || die "$name: host-local reservations left: $left"
}

n=0
for v in 0.3.0 0.3.1 0.4.0 1.0.0; do
    for tuning in 0 1; do
        n=$((n + 1))
        name="cnicf-${v//./}-t$tuning"
        subnet="10.199.$n.0/24"
        conf="$tmp/$name.conflist"
        write_conflist "$conf" "$name" "$v" "$subnet" "$tuning"
        rc=0
        out="$("$runner" -conflist "$conf" -bin-dir "$plugins" -cache-dir "$tmp/cache" \
            -netns "$nspath" -container-id "ctr-$name" -ifname eth0 \
            -args "IgnoreUnknown=1;K8S_POD_NAME=smoke" -keep-going \
            validate add cached check del del)" || rc=$?
        [[ "$(wc -l <<<"$out")" == 6 ]] || die "$name: expected 6 lines, got: $out"

        expect "$(nth "$out" 1)" '.step=="validate" and .ok' "$name validate"
        add="$(nth "$out" 2)"
        expect "$add" ".step==\"add\" and .ok and .cniVersion==\"$v\" and .result.cniVersion==\"$v\"" "$name add"
        expect "$add" '.interfaces | index("eth0") != null and length == 2' "$name add interfaces"
        expect "$add" ".ips == [\"10.199.$n.2/24\"]" "$name add ips"
        cached="$(nth "$out" 3)"
        expect "$cached" '.step=="cached" and .ok and .present and .configMatches' "$name cached"
        [[ "$(jq -cS .result <<<"$cached")" == "$(jq -cS .result <<<"$add")" ]] ||
            die "$name: cached result differs from add result"
        check="$(nth "$out" 4)"
        if [[ $v == 0.3.* ]]; then
            expect "$check" ".step==\"check\" and (.ok|not) and .code==null and .error==\"configuration version \\\"$v\\\" does not support the CHECK command\"" "$name check"
            want_rc=1
        else
            expect "$check" '.step=="check" and .ok' "$name check"
            want_rc=0
        fi
        expect "$(nth "$out" 5)" '.step=="del" and .ok' "$name del"
        expect "$(nth "$out" 6)" '.step=="del" and .ok' "$name second del"
        [[ $rc == "$want_rc" ]] || die "$name: exit status $rc, want $want_rc"
        assert_clean "$name"
        echo "ok   $name ($v, tuning=$tuning): validate add cached check del del"
        pass=$((pass + 1))
    done
done

# A plugin error reaches the runner as a *types.Error with its code.
name="cnicf-err"
conf="$tmp/$name.conflist"
write_conflist "$conf" "$name" 1.0.0 10.199.100.0/24 0
common=(-conflist "$conf" -bin-dir "$plugins" -cache-dir "$tmp/cache" -netns "$nspath" -container-id ctr-err -ifname eth0)
"$runner" "${common[@]}" add >/dev/null || die "$name: add failed"
ip -n "$ns" addr flush dev eth0
rc=0
out="$("$runner" "${common[@]}" check)" || rc=$?
[[ $rc == 1 ]] || die "$name: check after addr flush: exit $rc, want 1"
expect "$out" '.step=="check" and (.ok|not) and (.code|type)=="number"' "$name check"
"$runner" "${common[@]}" del >/dev/null || die "$name: del failed"
assert_clean "$name"
echo "ok   $name: CHECK failure carries code $(jq .code <<<"$out")"
pass=$((pass + 1))

# CNI 1.1.0 is beyond libcni v1.1.2 and the 1.1.1 plugins: validate refuses.
name="cnicf-110"
conf="$tmp/$name.conflist"
write_conflist "$conf" "$name" 1.1.0 10.199.101.0/24 0
rc=0
out="$("$runner" -conflist "$conf" -bin-dir "$plugins" -cache-dir "$tmp/cache" -netns "$nspath" -container-id ctr-110 -ifname eth0 validate)" || rc=$?
[[ $rc == 1 ]] || die "$name: validate exit $rc, want 1"
expect "$out" '(.ok|not) and (.error|test("does not support config version"))' "$name validate"
echo "ok   $name: validate refuses cniVersion 1.1.0"
pass=$((pass + 1))

ip netns del "$ns"
ip netns list | grep -qw "$ns" && die "netns $ns still listed"
[[ "$(host_links)" == "$links_before" ]] || die "root netns links changed: $(diff <(echo "$links_before") <(host_links) || true)"
[[ "$(ip route show; ip -6 route show)" == "$routes_before" ]] || die "root netns routes changed"
rm -rf "$tmp"
[[ ! -e "$tmp" ]] || die "$tmp still exists"
echo "smoke: PASS ($pass cases; no netns, veth, route, cache or IPAM leftovers)"
