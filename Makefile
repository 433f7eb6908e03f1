# Plexus task runner. Every target is what CI and the README run.
#
#   make setup   install the Debian packages the tests and the demo need (idempotent)
#   make demo    build, then run the demo in throwaway network namespaces
#   make lint    rustfmt check and clippy -D warnings
#   make test    setup + lint + the whole test suite (run as root): unit and
#                per-crate tests, `make e2e`, `make cri-e2e`, `make kernel-e2e`,
#                then doctests
#   make e2e     the black-box suite (e2e/): the built binaries on veth-emulated
#                hardware, the examples and manifests; bash -n on the kind suite
#   make cri-e2e containerd + runc as the runtime, driven over the CRI
#   make kernel-e2e  the tests that touch tc, eBPF or a link type, inside VMs
#                on Debian's 6.1 and 6.12 kernels (KERNELS, KERNEL_FILTER pick)
#   make kind-e2e  the kind suite (needs Docker, kind, kubectl): e2e/kind/run.sh
#   make fuzz    coverage-guided fuzzing of every parser of outside input,
#                FUZZ_SECS seconds per target (CI replays the corpora instead)
#   make bench   benchmarks: medians and ratios against a baseline in the same run
#   make crds    write crds/*.yaml from the Rust types

SHELL := /bin/bash
CARGO ?= cargo

# Debian packages: reference CNI plugins, iproute2/ping for the tests, strace
# for golden-byte captures, clang/llvm/libbpf for eBPF C, jq, and Go + libcni
# source for the conformance runner (e2e/conformance); containerd and runc
# (gcc builds the sandbox image) for cri-e2e; qemu, busybox (virtme-ng's
# initramfs) and Debian's 6.1 and 6.12 kernels for kernel-e2e.
DEB_PACKAGES := containernetworking-plugins iproute2 iputils-ping iptables strace \
	clang llvm libbpf-dev jq golang-go golang-github-appc-cni-dev shellcheck \
	containerd runc gcc libc6-dev \
	qemu-system-x86 busybox-static linux-image-amd64 linux-image-6.12-amd64
# From PyPI: virtme-ng boots a kernel with the host's filesystem as its root.
PIP_PACKAGES := virtme-ng==1.42

# The kernel matrix: one VM per series, every kernel-touching suite inside.
KERNELS ?= 6.1 6.12
KERNEL_FILTER ?=

# Test binaries named vm_* need what this machine's kernel lacks (tc flower,
# ipvlan, 802.1q): they run only in the kernel matrix's VMs.
HOST_FILTER := not binary(/^vm_/)

.PHONY: setup demo lint test e2e cri-e2e kernel-e2e kind-e2e fuzz bench build crds

setup:
	@PIP_PACKAGES="$(PIP_PACKAGES)" scripts/setup.sh $(DEB_PACKAGES)

build:
	$(CARGO) build --workspace --bins

crds:
	$(CARGO) run -q -p crds

demo: setup build
	@scripts/demo.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	shellcheck scripts/*.sh e2e/conformance/*.sh e2e/kind/*.sh crates/netlink/tests/fixtures/*.sh \
		dpu-offload/tests/fixtures/flower/*.sh

# The black-box tests run the built binaries, so build them first. nextest
# gives every test its own process, which suits namespace tests.
test: setup lint build
	$(CARGO) nextest run --workspace --exclude plexus-e2e -E '$(HOST_FILTER)'
	$(MAKE) --no-print-directory e2e
	$(MAKE) --no-print-directory cri-e2e
	$(MAKE) --no-print-directory kernel-e2e
	$(CARGO) test --workspace --doc

e2e: setup build
	$(CARGO) nextest run -p plexus-e2e -E '$(HOST_FILTER) & not binary(cri)'
	for s in e2e/kind/*.sh; do bash -n "$$s"; done

cri-e2e: setup build
	$(CARGO) nextest run -p plexus-e2e -E 'binary(cri)'

# kernel-matrix writes nextest's build metadata (building the test binaries),
# boots each kernel and prints which test passed where.
kernel-e2e: setup build
	target/debug/kernel-matrix $(foreach k,$(KERNELS),--kernel $(k)) --filter '$(KERNEL_FILTER)'

kind-e2e:
	e2e/kind/run.sh

# cargo-fuzz on the stable toolchain (RUSTC_BOOTSTRAP=1 lets it use the
# sanitizer flags). New inputs land in each target's corpus/, which
# meta-cni/tests/fuzz_corpora.rs replays in every test run.
FUZZ_SECS ?= 60
META_FUZZ_TARGETS := annotation netconf nad cache checkpoint

fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
	set -e; cd meta-cni/fuzz && for t in $(META_FUZZ_TARGETS); do \
		RUSTC_BOOTSTRAP=1 cargo fuzz run $$t -- -max_total_time=$(FUZZ_SECS) -print_final_stats=1; \
	done
	cd dpu-offload/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run flow_file -- -max_total_time=$(FUZZ_SECS) -print_final_stats=1

# The benchmarks run the release binaries, so build those first. Each
# bench's output is also kept in target/bench/, and docs/benchmarks.md and
# its plot are written from it.
BENCHES := invoker meta_cni sriov_device_plugin dpu_offload ebpf_datapath sriov_cni
BENCH_OUT := target/bench

bench: setup
	$(CARGO) build --release --workspace --bins
	mkdir -p $(BENCH_OUT)
	echo "$(BENCHES)" > $(BENCH_OUT)/order
	echo "$$(nproc) cores, $$(awk '/MemTotal/ {printf "%.0f GiB", $$2/1048576}' /proc/meminfo), Linux $$(uname -r), $$(date -u +%Y-%m-%d)" > $(BENCH_OUT)/machine
	set -o pipefail; for b in $(BENCHES); do \
		$(CARGO) bench -q -p plexus-e2e --bench $$b | tee $(BENCH_OUT)/$$b.md || exit 1; \
	done
	$(CARGO) run -q --release -p plexus-e2e --bin bench-report -- $(BENCH_OUT) docs/benchmarks.md docs/benchmarks.svg
