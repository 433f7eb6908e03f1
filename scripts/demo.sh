#!/usr/bin/env bash
# The Plexus demo, no Kubernetes needed. It acts as a container runtime
# would, calling the `plexus` CNI plugin for two "pods" (network namespaces)
# on a throwaway "node" namespace. plexus runs standalone: the
# NetworkAttachmentDefinitions come from a directory, the pod's networks
# annotation from CNI_ARGS, and the network-status goes to a file.
#
# Each pod gets:
#   eth0  the cluster network (ptp + host-local, tuning chained);
#   net1  a macvlan network, with the static IP and MAC its annotation asks for;
#   net2  an SR-IOV VF: the device plugin serves the NIC's VFs to the kubelet,
#         the kubelet allocates one per pod, plexus finds it through the
#         PodResources API, and the `sriov` plugin moves it into the pod.
# The VFs' representors are switched by a flow table (examples/flows/
# vf-switch.flows) in Plexus's eBPF tc datapath: nothing else connects them.
# The pods ping each other over all three, and everything is torn down.
#
# What is emulated, and only that (target/debug/demo-rig, the tests' own
# fakes): the SR-IOV NIC (a fake sysfs tree, VFs as veth ends, the
# representors as their peers in an "eswitch" namespace) and the kubelet
# (its device-manager and PodResources gRPC APIs). Everything else is the
# real binaries, the reference CNI plugins and the kernel. Nothing outside
# the namespaces it creates, a private bpffs and a temp dir is touched.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${PLEXUS_BIN_DIR:-$root/target/debug}"
for b in plexus sriov sriov-device-plugin dpu-offload demo-rig; do
    [[ -x $bin/$b ]] || { echo "demo: $bin/$b not built (make demo builds it)" >&2; exit 1; }
done
plexus="$bin/plexus"
[[ $(id -u) -eq 0 ]] || { echo "demo: run as root (it creates network namespaces)" >&2; exit 1; }

tag="plxdemo$$"
host="$tag-host"
pods=("$tag-a" "$tag-b")
work="$(mktemp -d)"
resource=intel.com/intel_sriov_netdevice
step=0 steps=12

say() {
    step=$((step + 1))
    printf '\n\033[1m[%d/%d] %s\033[0m\n' "$step" "$steps" "$*"
}

dp_pid="" rig_pid="" rig_in="" rig_out="" eswitch="" pins=""
cleanup() {
    if [[ -n $dp_pid ]]; then kill "$dp_pid" 2>/dev/null || true; wait "$dp_pid" 2>/dev/null || true; fi
    if [[ -n $eswitch ]]; then
        ip netns exec "$eswitch" "$bin/dpu-offload" flush --bpf-dir "$pins" >/dev/null 2>&1 || true
    fi
    # EOF on its stdin: the rig takes its namespace, sysfs tree and bpffs with it.
    if [[ -n $rig_in ]]; then exec {rig_in}>&-; fi
    if [[ -n $rig_pid ]]; then wait "$rig_pid" 2>/dev/null || true; fi
    for ns in "${pods[@]}" "$host"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# The runtime's side of CNI: environment + config on stdin, result on stdout.
# $3 is the pod's networks annotation (standalone mode reads it from CNI_ARGS).
cni() {
    local cmd=$1 pod=$2 networks=${3:-}
    CNI_COMMAND=$cmd CNI_CONTAINERID="$pod" CNI_NETNS="/run/netns/$pod" CNI_IFNAME=eth0 \
        CNI_PATH="/usr/lib/cni:$bin" \
        CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=$pod;K8S_ANNOTATION_NETWORKS=$networks" \
        ip netns exec "$host" "$plexus" <"$work/plexus.conf"
}

# One request to the rig, one JSON answer back.
rig() {
    local answer
    echo "$*" >&"$rig_in"
    read -r -u "$rig_out" answer
    if jq -e .error <<<"$answer" >/dev/null; then
        echo "demo: rig: $(jq -r .error <<<"$answer")" >&2
        return 1
    fi
    echo "$answer"
}

say "plexus speaks CNI"
CNI_COMMAND=VERSION "$plexus" | jq -c .

say "a node namespace (a NIC for macvlan, an emulated SR-IOV NIC) and two pod namespaces"
ip netns add "$host"
ip -n "$host" link set lo up
ip netns exec "$host" sysctl -qw net.ipv4.ip_forward=1
ip -n "$host" link add data0 type veth peer name data0-peer
ip -n "$host" link set data0 up
ip -n "$host" link set data0-peer up
for p in "${pods[@]}"; do ip netns add "$p"; echo "  pod $p"; done
mkdir -p "$work/kubelet"
coproc RIG { "$bin/demo-rig" --node "$host" --dir "$work/kubelet" --vfs 2 2>"$work/rig.log"; }
# Our own copies of the coproc's pipes: bash closes its fds in subshells.
# shellcheck disable=SC2153 # coproc sets RIG_PID
rig_pid=$RIG_PID
exec {rig_out}<&"${RIG[0]}" {rig_in}>&"${RIG[1]}"
eval "exec ${RIG[0]}<&- ${RIG[1]}>&-"
read -r -u "$rig_out" nic || { cat "$work/rig.log" >&2; exit 1; }
sysfs=$(jq -r .sysfs <<<"$nic")
eswitch=$(jq -r .eswitch <<<"$nic")
pins="$(jq -r .bpffs <<<"$nic")/plexus"
jq -r '.vfs[] | "  VF \(.pci): netdev \(.netdev) on the node, representor \(.representor) in the eswitch"' <<<"$nic"

say "the SR-IOV device plugin finds the VFs and serves them to the kubelet"
ip netns exec "$host" "$bin/sriov-device-plugin" \
    --config-file "$root/examples/sriov-device-plugin/config.json" \
    --sysfs-root "$sysfs" --device-plugin-dir "$(jq -r .devicePluginDir <<<"$nic")" \
    --plugins-registry-dir "$work/no-plugin-watcher" --devinfo-dir "$work/devinfo/dp" \
    >"$work/device-plugin.log" 2>&1 {rig_in}>&- {rig_out}<&- &
dp_pid=$!
ip netns exec "$host" "$bin/sriov-device-plugin" discover \
    --config-file "$root/examples/sriov-device-plugin/config.json" --sysfs-root "$sysfs" |
    grep -E '^(0000|pool)|->' | sed 's/^/  /'
echo "  the kubelet sees $resource: $(rig wait "$resource" 2 | jq -c .devices)"

say "a flow table switches the representors, in the eBPF tc datapath"
grep -v '^#' "$root/examples/flows/vf-switch.flows" | sed 's/^/  /'
ip netns exec "$eswitch" "$bin/dpu-offload" apply --backend ebpf --bpf-dir "$pins" \
    --flows "$root/examples/flows/vf-switch.flows" | sed 's/^/  /'

mkdir -p "$work/net.d" "$work/nads"
# The cluster network, as a node's CNI config directory holds it.
cat >"$work/net.d/10-pod-network.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "pod-network", "plugins": [
  {"type": "ptp", "mtu": 1400,
   "ipam": {"type": "host-local", "dataDir": "$work/ipam",
            "ranges": [[{"subnet": "10.250.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}}]}
JSON
# NetworkAttachmentDefinitions, the same YAML kubectl would apply.
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
# As examples/nads/sriov.yaml, with the demo's state directories and sysfs.
cat >"$work/nads/sriov-net.yaml" <<YAML
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: sriov-net
  namespace: demo
  annotations:
    k8s.v1.cni.cncf.io/resourceName: $resource
spec:
  config: |
    {"cniVersion": "1.0.0", "type": "sriov", "spoofchk": "on", "trust": "off",
     "dataDir": "$work/sriov", "sysfsRoot": "$sysfs",
     "ipam": {"type": "host-local", "dataDir": "$work/ipam",
              "ranges": [[{"subnet": "10.56.217.0/24"}]]}}
YAML
# plexus' own config: Multus' keys, the two standalone ones, and where this
# "node's" kubelet and device-info files are.
cat >"$work/plexus.conf" <<JSON
{"cniVersion": "1.0.0", "name": "plexus", "type": "plexus",
 "clusterNetwork": "pod-network", "confDir": "$work/net.d", "cniDir": "$work/cache",
 "nadDir": "$work/nads", "statusDir": "$work/status",
 "podResourcesSocket": "$(jq -r .podResources <<<"$nic")",
 "deviceCheckpointFile": "$work/kubelet/kubelet_internal_checkpoint",
 "deviceInfoDir": "$work/devinfo"}
JSON
echo
echo "  cluster network: ptp + host-local + tuning"
echo "  NAD demo/macvlan-data: macvlan + static + tuning"
echo "  NAD demo/sriov-net: sriov + host-local, resourceName $resource"

declare -A ip_of vf_ip_of
i=10
for p in "${pods[@]}"; do
    i=$((i + 1))
    ann="[{\"name\": \"macvlan-data\", \"ips\": [\"192.168.50.$i/24\"], \"mac\": \"02:50:00:00:00:$i\"}, {\"name\": \"sriov-net\"}]"
    say "pod $p: the kubelet allocates a VF, then ADD with k8s.v1.cni.cncf.io/networks: $ann"
    rig allocate demo "$p" "$resource" | jq -r '"  Allocate: \(.envs | to_entries | map("\(.key)=\(.value)") | join(" "))"'
    cni ADD "$p" "$ann" >"$work/$p.result"
    ip_of[$p]=$(jq -r '.ips[0].address | split("/")[0]' "$work/$p.result")
    ip -n "$p" -br addr show | grep -v '^lo' | sed 's/^/  /'
    echo "  network-status:"
    jq -c '.[]' "$work/status/$p.json" | sed 's/^/    /'
    vf_ip_of[$p]=$(jq -r '.[] | select(.interface == "net2") | .ips[0]' "$work/status/$p.json")
done

a=${pods[0]} b=${pods[1]}
say "ping $a -> $b over eth0 (${ip_of[$b]}), net1 (192.168.50.12) and the VF, net2 (${vf_ip_of[$b]})"
ip netns exec "$a" ping -c 2 -i 0.2 -W 2 "${ip_of[$b]}" | tail -2 | sed 's/^/  /'
ip netns exec "$a" ping -c 2 -i 0.2 -W 2 -I net1 192.168.50.12 | tail -2 | sed 's/^/  /'
ip netns exec "$a" ping -c 3 -i 0.2 -W 2 -I net2 "${vf_ip_of[$b]}" | tail -2 | sed 's/^/  /'
# UDP to the discard port: the flow table drops it in the eswitch.
ip netns exec "$a" bash -c "echo dropped >/dev/udp/${vf_ip_of[$b]}/9"

say "what the eBPF datapath counted (dump-flows)"
ip netns exec "$eswitch" "$bin/dpu-offload" dump-flows --bpf-dir "$pins" | sed 's/^/  /'
echo "  (what matched no flow is the VFs' IPv6 neighbour discovery: the table passes ARP and IPv4 only)"
drops=$(ip netns exec "$eswitch" "$bin/dpu-offload" dump-flows --json --bpf-dir "$pins" |
    jq '[.flows[] | select(.flow | contains("tp_dst=9")) | .packets] | add')
[[ $drops -ge 1 ]] || { echo "demo: the drop flow counted no packet" >&2; exit 1; }

say "bad input is a CNI error on stdout, and changes nothing"
cni ADD "$tag-c" "macvlan-data@this-name-is-too-long" | jq -c . || true
cni ADD "$tag-c" "no-such-network" | jq -c . || true

say "DEL each pod (from plexus' cache), then again: DEL is idempotent"
for p in "${pods[@]}"; do
    cni DEL "$p"
    cni DEL "$p"
    echo "  $p: deleted twice"
done
echo "  VFs back on the node: $(ip -n "$host" -br link | awk '/^ensvf/ {sub("@.*", "", $1); print $1}' | tr '\n' ' ')"

say "stop the device plugin, flush the flows, take the emulated NIC and kubelet away"
kill "$dp_pid"
wait "$dp_pid" || true
dp_pid=""
ip netns exec "$eswitch" "$bin/dpu-offload" flush --bpf-dir "$pins" | sed 's/^/  /'
left_pins=0
[[ -d $pins ]] && left_pins=$(find "$pins" -mindepth 1 | wc -l)
echo "  pinned BPF objects left: $left_pins"
exec {rig_in}>&-
rig_in=""
wait "$rig_pid"
rig_pid=""

say "nothing left behind"
leases=$(find "$work/ipam" -type f ! -name lock ! -name 'last_reserved_ip*' | wc -l)
# Lock files stay, as host-local's `lock` does: removing one could race a
# plugin that is about to take it.
state_files=$(find "$work/cache" "$work/status" "$work/sriov" "$work/devinfo/cni" -type f ! -name '*.lock' 2>/dev/null || true)
state=$(grep -c . <<<"$state_files" || true)
echo "  host-local leases: $leases; plexus, sriov and device-info state files: $state"
echo "  links in the node namespace: $(ip -n "$host" -br link | awk '{print $1}' | tr '\n' ' ')"
for p in "${pods[@]}"; do
    echo "  links in $p: $(ip -n "$p" -br link | awk '{print $1}' | tr '\n' ' ')"
done
esw_left=$(ip netns list | grep -c "^$eswitch" || true)
echo "  eswitch namespace left: $esw_left"
eswitch=""
[[ $leases -eq 0 && $state -eq 0 && $left_pins -eq 0 && $esw_left -eq 0 ]] ||
    { echo "demo: state leaked: $state_files" >&2; exit 1; }
echo
echo "done: three networks per pod, every ping answered, every flow counted, nothing left."
