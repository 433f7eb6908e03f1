#!/usr/bin/env bash
# The Plexus demo, no Kubernetes needed: acts as a container runtime would,
# calling the `plexus` CNI plugin for two "pods" (network namespaces) behind a
# throwaway "host" namespace, pings between them, and tears everything down.
# Nothing outside the namespaces it creates, and a temp dir, is touched.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
plexus="$root/target/debug/plexus"
[[ -x $plexus ]] || { echo "demo: $plexus not built (make demo builds it)" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || { echo "demo: run as root (it creates network namespaces)" >&2; exit 1; }

tag="plxdemo$$"
host="$tag-host"
pods=("$tag-a" "$tag-b")
work="$(mktemp -d)"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
    for ns in "${pods[@]}" "$host"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# The runtime's side of CNI: environment + config on stdin, result on stdout.
cni() {
    local cmd=$1 pod=$2 conf=$3
    CNI_COMMAND=$cmd CNI_CONTAINERID="$pod" CNI_NETNS="/run/netns/$pod" CNI_IFNAME=eth0 \
        CNI_PATH=/usr/lib/cni CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=$pod" \
        ip netns exec "$host" "$plexus" <"$conf"
}

say "plexus speaks CNI"
CNI_COMMAND=VERSION "$plexus" | jq -c .

say "a host namespace and two pod namespaces"
ip netns add "$host"
ip -n "$host" link set lo up
ip netns exec "$host" sysctl -qw net.ipv4.ip_forward=1
for p in "${pods[@]}"; do ip netns add "$p"; echo "  pod $p"; done

cat >"$work/plexus.conf" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "plexus",
  "type": "plexus",
  "cniDir": "$work/plexus",
  "delegates": [{
    "cniVersion": "1.0.0",
    "name": "pod-network",
    "plugins": [
      {"type": "ptp", "mtu": 1400,
       "ipam": {"type": "host-local", "dataDir": "$work/ipam",
                "ranges": [[{"subnet": "10.250.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
      {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}}
    ]
  }]
}
JSON

declare -A ip_of
for p in "${pods[@]}"; do
    say "ADD $p (plexus -> ptp + host-local -> tuning)"
    cni ADD "$p" "$work/plexus.conf" | tee "$work/$p.result" | jq .
    ip_of[$p]=$(jq -r '.ips[0].address | split("/")[0]' "$work/$p.result")
    ip -n "$p" -br addr show dev eth0
done

say "ping ${pods[0]} -> ${pods[1]} (${ip_of[${pods[1]}]})"
ip netns exec "${pods[0]}" ping -c 3 -i 0.2 -W 2 "${ip_of[${pods[1]}]}"

say "bad input is a CNI error on stdout, and changes nothing"
CNI_IFNAME=this-name-is-too-long CNI_COMMAND=ADD CNI_CONTAINERID=x CNI_NETNS=/run/netns/x \
    CNI_PATH=/usr/lib/cni "$plexus" <"$work/plexus.conf" | jq -c . || true

for p in "${pods[@]}"; do
    say "DEL $p (with the cached result, then again: DEL is idempotent)"
    jq --slurpfile r "$work/$p.result" '. + {prevResult: $r[0]}' "$work/plexus.conf" >"$work/$p.del"
    cni DEL "$p" "$work/$p.del"
    cni DEL "$p" "$work/plexus.conf"
    echo "  ok"
done

say "nothing left behind"
leases=$(find "$work/ipam" -type f ! -name lock ! -name 'last_reserved_ip*' | wc -l)
echo "  host-local leases: $leases"
echo "  links in the host namespace: $(ip -n "$host" -br link | awk '{print $1}' | tr '\n' ' ')"
for p in "${pods[@]}"; do
    echo "  links in $p: $(ip -n "$p" -br link | awk '{print $1}' | tr '\n' ' ')"
done
[[ $leases -eq 0 ]] || { echo "demo: leases leaked" >&2; exit 1; }
say "done"
