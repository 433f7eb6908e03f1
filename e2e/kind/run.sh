#!/usr/bin/env bash
# The kind suite: the veth suite's scenarios on a real cluster, for machines
# with Docker, kind and kubectl. CI has no Docker engine: there, `make lint`
# checks this script with ShellCheck, `make e2e` with bash -n, and
# e2e/tests/manifests.rs validates the manifests next to it.
#
#   e2e/kind/run.sh          build the images, create the cluster, run, delete it
#   KEEP=1 e2e/kind/run.sh   leave the cluster up afterwards (kind delete cluster --name plexus-e2e)
#
# Scenarios, as in e2e/tests/meta_cni.rs:
#   attachments   pod-a and pod-b (one per worker) get net1 with the addresses
#                 and MACs they asked for, network-status says so, and they
#                 ping each other over the workers' eth1 link;
#   static IP     the address and MAC on net1 are the annotation's;
#   default route pod-c's default route goes through net1;
#   DEL cleanup   after the pods are deleted, no host-local lease and no
#                 plexus cache entry is left on either worker.
# Needs root for the veth link between the worker containers (sudo is
# used when it is there).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cluster=plexus-e2e
workers=("$cluster-worker" "$cluster-worker2")
images=(plexus sriov-device-plugin sriov-cni dpu-offload)

for tool in docker kind kubectl; do
    command -v "$tool" >/dev/null || { echo "kind e2e: $tool is required" >&2; exit 1; }
done
sudo=""
[[ $(id -u) -eq 0 ]] || sudo=sudo

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail() { echo "kind e2e: FAIL: $*" >&2; exit 1; }

cleanup() {
    if [[ ${KEEP:-0} == 1 ]]; then
        echo "KEEP=1: cluster $cluster left up"
    else
        kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

say "build the images"
for i in "${images[@]}"; do
    docker build -q -f "$root/deploy/images/$i.Dockerfile" -t "ghcr.io/plexus-net/$i:e2e" "$root"
done

say "create the cluster and link the workers with a veth pair (eth1 on each)"
kind create cluster --config "$here/kind-config.yaml" --wait 120s
pid_of() { docker inspect -f '{{.State.Pid}}' "$1"; }
$sudo ip link add plx-e2e0 type veth peer name plx-e2e1
$sudo ip link set plx-e2e0 netns "$(pid_of "${workers[0]}")"
$sudo ip link set plx-e2e1 netns "$(pid_of "${workers[1]}")"
docker exec "${workers[0]}" ip link set plx-e2e0 name eth1 up
docker exec "${workers[1]}" ip link set plx-e2e1 name eth1 up

say "load the images and apply deploy/ (through e2e/kind/kustomization.yaml)"
for i in "${images[@]}"; do
    kind load docker-image --name "$cluster" "ghcr.io/plexus-net/$i:e2e"
done
kubectl apply -k "$here"
for ds in plexus sriov-device-plugin dpu-offload; do
    kubectl -n kube-system rollout status "daemonset/$ds" --timeout=180s
done
for w in "${workers[@]}"; do
    docker exec "$w" test -x /opt/cni/bin/plexus || fail "$w: plexus not installed"
    docker exec "$w" test -f /etc/cni/net.d/00-plexus.conflist || fail "$w: no 00-plexus.conflist"
done

say "the scenarios' networks and pods"
kubectl apply -f "$here/nads.yaml"
kubectl apply -f "$here/pods.yaml"
kubectl wait --for=condition=Ready pod/pod-a pod/pod-b pod/pod-c pod/pod-d --timeout=180s

in_pod() { local pod=$1; shift; kubectl exec "$pod" -- "$@"; }
status_of() {
    kubectl get pod "$1" -o jsonpath='{.metadata.annotations.k8s\.v1\.cni\.cncf\.io/network-status}'
}

say "attachments and static IP/MAC"
for spec in pod-a:10.99.0.1:02:99:00:00:00:01 pod-b:10.99.0.2:02:99:00:00:00:02; do
    pod=${spec%%:*} rest=${spec#*:}
    ip=${rest%%:*} mac=${rest#*:}
    addr=$(in_pod "$pod" ip -o -4 addr show dev net1)
    [[ $addr == *"$ip/24"* ]] || fail "$pod: net1 has no $ip: $addr"
    link=$(in_pod "$pod" ip -o link show dev net1)
    [[ $link == *"$mac"* ]] || fail "$pod: net1 MAC is not $mac: $link"
    status=$(status_of "$pod")
    [[ $status == *'"interface":"net1"'* && $status == *"$ip"* ]] ||
        fail "$pod: network-status lacks net1 with $ip: $status"
    echo "  $pod: net1 $ip $mac, network-status: $status"
done
in_pod pod-a ping -c 3 -W 2 10.99.0.2 || fail "pod-a cannot reach pod-b over net1"
in_pod pod-b ping -c 3 -W 2 10.99.0.1 || fail "pod-b cannot reach pod-a over net1"

say "default route"
route=$(in_pod pod-c ip route show default)
[[ $route == *"via 10.99.0.2 dev net1"* ]] || fail "pod-c: default route is $route"
echo "  pod-c: $route"

say "DEL cleanup"
lease_dir=/var/lib/cni/networks/e2e-dynamic
leases() { docker exec "${workers[1]}" sh -c "ls $lease_dir 2>/dev/null | grep -vc -e '^lock\$' -e '^last_reserved_ip' || true"; }
[[ $(leases) -eq 1 ]] || fail "pod-d has no host-local lease on ${workers[1]}"
kubectl delete -f "$here/pods.yaml" --wait=true --timeout=120s
[[ $(leases) -eq 0 ]] || fail "a host-local lease is left after DEL"
for w in "${workers[@]}"; do
    left=$(docker exec "$w" sh -c 'find /var/lib/cni/plexus -type f 2>/dev/null | wc -l')
    [[ $left -eq 0 ]] || fail "$w: $left plexus cache entries left after DEL"
done
echo "  no lease, no cache entry left"

say "all scenarios passed"
