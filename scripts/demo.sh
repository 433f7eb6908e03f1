#!/usr/bin/env bash
# The Plexus demo, no Kubernetes needed: acts as a container runtime would,
# calling the `plexus` CNI plugin for two "pods" (network namespaces) behind a
# throwaway "host" namespace. plexus runs standalone: NetworkAttachmentDefinitions
# come from a directory, the pod's networks annotation from CNI_ARGS, and the
# network-status goes to a file. Each pod gets eth0 (ptp, the cluster network)
# and net1 (macvlan with a static IP and MAC from the annotation); the pods
# ping each other over both, then everything is torn down.
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
# $3 is the pod's networks annotation (standalone mode reads it from CNI_ARGS).
cni() {
    local cmd=$1 pod=$2 networks=${3:-}
    CNI_COMMAND=$cmd CNI_CONTAINERID="$pod" CNI_NETNS="/run/netns/$pod" CNI_IFNAME=eth0 \
        CNI_PATH=/usr/lib/cni \
        CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=$pod;K8S_ANNOTATION_NETWORKS=$networks" \
        ip netns exec "$host" "$plexus" <"$work/plexus.conf"
}

say "plexus speaks CNI"
CNI_COMMAND=VERSION "$plexus" | jq -c .

say "a host namespace (with a NIC for macvlan) and two pod namespaces"
ip netns add "$host"
ip -n "$host" link set lo up
ip netns exec "$host" sysctl -qw net.ipv4.ip_forward=1
ip -n "$host" link add data0 type veth peer name data0-peer
ip -n "$host" link set data0 up
ip -n "$host" link set data0-peer up
for p in "${pods[@]}"; do ip netns add "$p"; echo "  pod $p"; done

mkdir -p "$work/net.d" "$work/nads"
# The cluster network, as a node's CNI config directory holds it.
cat >"$work/net.d/10-pod-network.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "pod-network", "plugins": [
  {"type": "ptp", "mtu": 1400,
   "ipam": {"type": "host-local", "dataDir": "$work/ipam",
            "ranges": [[{"subnet": "10.250.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}}]}
JSON
# A NetworkAttachmentDefinition, the same YAML kubectl would apply.
cat >"$work/nads/macvlan-data.yaml" <<'YAML'
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: macvlan-data
  namespace: demo
spec:
  config: |
    {"cniVersion": "1.0.0", "plugins": [
      {"type": "macvlan", "master": "data0", "mode": "bridge",
       "ipam": {"type": "static"}, "capabilities": {"ips": true}},
      {"type": "tuning", "capabilities": {"mac": true}}]}
YAML
# plexus' own config: Multus' keys, plus the two standalone ones.
cat >"$work/plexus.conf" <<JSON
{"cniVersion": "1.0.0", "name": "plexus", "type": "plexus",
 "clusterNetwork": "pod-network", "confDir": "$work/net.d", "cniDir": "$work/cache",
 "nadDir": "$work/nads", "statusDir": "$work/status"}
JSON
echo "  cluster network: ptp + host-local; NAD demo/macvlan-data: macvlan + static + tuning"

declare -A ip_of
i=10
for p in "${pods[@]}"; do
    i=$((i + 1))
    ann="[{\"name\": \"macvlan-data\", \"ips\": [\"192.168.50.$i/24\"], \"mac\": \"02:50:00:00:00:$i\"}]"
    say "ADD $p with k8s.v1.cni.cncf.io/networks: $ann"
    cni ADD "$p" "$ann" >"$work/$p.result"
    ip_of[$p]=$(jq -r '.ips[0].address | split("/")[0]' "$work/$p.result")
    ip -n "$p" -br addr show | grep -v '^lo'
    echo "  network-status:"
    jq -c '.[]' "$work/status/$p.json" | sed 's/^/    /'
done

a=${pods[0]} b=${pods[1]}
say "ping $a -> $b over eth0 (${ip_of[$b]}) and over net1 (192.168.50.12)"
ip netns exec "$a" ping -c 2 -i 0.2 -W 2 "${ip_of[$b]}" | tail -2
ip netns exec "$a" ping -c 2 -i 0.2 -W 2 -I net1 192.168.50.12 | tail -2

say "bad input is a CNI error on stdout, and changes nothing"
cni ADD "$tag-c" "macvlan-data@this-name-is-too-long" | jq -c . || true
cni ADD "$tag-c" "no-such-network" | jq -c . || true

for p in "${pods[@]}"; do
    say "DEL $p (from plexus' cache), then again: DEL is idempotent"
    cni DEL "$p"
    cni DEL "$p"
    echo "  ok"
done

say "nothing left behind"
leases=$(find "$work/ipam" -type f ! -name lock ! -name 'last_reserved_ip*' | wc -l)
caches=$(find "$work/cache" "$work/status" -type f | wc -l)
echo "  host-local leases: $leases, cache and status files: $caches"
echo "  links in the host namespace: $(ip -n "$host" -br link | awk '{print $1}' | tr '\n' ' ')"
for p in "${pods[@]}"; do
    echo "  links in $p: $(ip -n "$p" -br link | awk '{print $1}' | tr '\n' ' ')"
done
[[ $leases -eq 0 && $caches -eq 0 ]] || { echo "demo: state leaked" >&2; exit 1; }
say "done"
