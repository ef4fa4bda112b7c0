#!/usr/bin/env bash
# Builds what a real local node runs, from the Go module proxy and the machine's gcc, into
# versioned folders of the same cache as scripts/build-control-plane.sh, once each:
#
#   node-k8s-<KUBE_VERSION>/bin      kubelet, kube-scheduler, kubectl  (CGO_ENABLED=0)
#   containerd-<CONTAINERD_VERSION>/bin  containerd, containerd-shim-runc-v2, ctr
#                                        (CGO_ENABLED=0, tag no_btrfs)
#   runc-<RUNC_VERSION>/bin          runc (cgo + libseccomp; Debian: libseccomp-dev)
#   cni-plugins-<CNI_PLUGINS_VERSION>/bin  bridge, host-local, loopback, portmap
#   pause-<KUBE_VERSION>/bin         pause (gcc -static of k8s.io/kubernetes build/pause/linux/pause.c)
#
# A folder is (re)built when its version changes (a new folder) or a binary in it is
# missing. kubelet, kube-scheduler and kubectl are compiled with exactly the flags of the
# control plane's kube-apiserver/kube-controller-manager, so the packages they share come
# out of the Go build cache that build warmed (go caches compiled packages by content and
# flags, across invocations).
#
# Users who already have binaries set these and the matching step is skipped (see
# ../src/node-binaries.ts): KUBELET, KUBE_SCHEDULER, KUBECTL, CONTAINERD_BIN_DIR
# (containerd, containerd-shim-runc-v2, ctr), RUNC, CNI_BIN_DIR, PAUSE (a static pause binary).
#
# Prints one line per component on stdout: `<component> <bin folder>`.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.4.2}"
RUNC_VERSION="${RUNC_VERSION:-v1.5.3}"
CNI_PLUGINS_VERSION="${CNI_PLUGINS_VERSION:-v1.10.0}"
# shellcheck source=lib/cache.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cache.sh"
log() { printf '[node-build] %s\n' "$*" >&2; }
# shellcheck source=lib/progress.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/progress.sh"
# shellcheck source=lib/go.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/go.sh"

K8S_BIN="$CACHE_ROOT/node-k8s-${KUBE_VERSION}/bin"
CONTAINERD_BIN="$CACHE_ROOT/containerd-${CONTAINERD_VERSION}/bin"
RUNC_BIN="$CACHE_ROOT/runc-${RUNC_VERSION}/bin"
CNI_BIN="$CACHE_ROOT/cni-plugins-${CNI_PLUGINS_VERSION}/bin"
PAUSE_BIN="$CACHE_ROOT/pause-${KUBE_VERSION}/bin"

have_all() { # folder binary...
  local dir="$1"; shift
  for b in "$@"; do [[ -x "$dir/$b" ]] || return 1; done
}

cache_lock node
need_k8s=0; need_containerd=0; need_runc=0; need_cni=0; need_pause=0
[[ -n "${KUBELET:-}" && -n "${KUBE_SCHEDULER:-}" && -n "${KUBECTL:-}" ]] || have_all "$K8S_BIN" kubelet kube-scheduler kubectl || need_k8s=1
[[ -n "${CONTAINERD_BIN_DIR:-}" ]] || have_all "$CONTAINERD_BIN" containerd containerd-shim-runc-v2 ctr || need_containerd=1
[[ -n "${RUNC:-}" ]] || have_all "$RUNC_BIN" runc || need_runc=1
[[ -n "${CNI_BIN_DIR:-}" ]] || have_all "$CNI_BIN" bridge host-local loopback portmap || need_cni=1
[[ -n "${PAUSE:-}" ]] || have_all "$PAUSE_BIN" pause || need_pause=1

report() {
  echo "kubernetes $K8S_BIN"
  echo "containerd $CONTAINERD_BIN"
  echo "runc $RUNC_BIN"
  echo "cni $CNI_BIN"
  echo "pause $PAUSE_BIN"
}

if (( need_k8s + need_containerd + need_runc + need_cni + need_pause == 0 )); then
  log "cached: $CACHE_ROOT/{node-k8s-${KUBE_VERSION},containerd-${CONTAINERD_VERSION},runc-${RUNC_VERSION},cni-plugins-${CNI_PLUGINS_VERSION},pause-${KUBE_VERSION}}"
  report
  exit 0
fi

require_go "the node's binaries are not all in $CACHE_ROOT." \
  "Install Go >= 1.26 (https://go.dev/doc/install) and run this again, or point" \
  "KUBELET, KUBE_SCHEDULER, KUBECTL, CONTAINERD_BIN_DIR, RUNC, CNI_BIN_DIR and PAUSE" \
  "at binaries you already have."
if (( need_runc + need_pause > 0 )) && ! command -v gcc >/dev/null 2>&1; then
  log "gcc is not installed: runc (cgo) and the static pause binary need it."
  log "Debian/Ubuntu: apt-get install gcc libc6-dev libseccomp-dev; or set RUNC and PAUSE."
  exit 2
fi
if (( need_runc > 0 )) && ! { echo '#include <seccomp.h>' | gcc -E - >/dev/null 2>&1; }; then
  log "libseccomp's headers are missing: runc is built with seccomp."
  log "Debian/Ubuntu: apt-get install libseccomp-dev; or set RUNC to a runc binary."
  exit 2
fi

export GOTOOLCHAIN=local GOFLAGS=-mod=mod
start=$(date +%s)
step_time() { log "$1 built in $(( $(date +%s) - $2 ))s"; }

# A throwaway module that requires <module>@<version>, with tools.go importing <packages>.
module_dir() { # dir module version package...
  local dir="$1" mod="$2" ver="$3"; shift 3
  mkdir -p "$dir"
  cd "$dir"
  printf 'module local.test/nodebins\n\ngo 1.26.0\n\nrequire %s %s\n' "$mod" "$ver" > go.mod
  { printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for p in "$@"; do printf '\t_ "%s"\n' "$p"; done
    printf ')\n'; } > tools.go
}

# --- kubelet, kube-scheduler, kubectl ------------------------------------------------------
if (( need_k8s )); then
  t=$(date +%s)
  log "building kubelet, kube-scheduler and kubectl $KUBE_VERSION (cold: many minutes on 2 cores; shares the control plane's Go build cache)"
  minor="${KUBE_VERSION#v1.}"
  staging="v0.${minor}"
  module_dir "$CACHE_ROOT/node-k8s-${KUBE_VERSION}/src" k8s.io/kubernetes "$KUBE_VERSION" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
  heartbeat "downloading k8s.io/kubernetes $KUBE_VERSION" modcache_status \
    sh -c 'go mod download -json "$1" > "$0"' "$PWD/download.json" "k8s.io/kubernetes@${KUBE_VERSION}"
  gomod=$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' download.json)
  [[ -f "$gomod" ]] || { log "could not download k8s.io/kubernetes@${KUBE_VERSION}"; exit 1; }
  goline=$(sed -n 's/^go \(.*\)$/\1/p' "$gomod" | head -n1)
  go mod edit -go="$goline"
  for m in $(sed -n 's/^[[:space:]]*\(k8s\.io\/[a-z0-9-]*\) v0\.0\.0$/\1/p' "$gomod" | sort -u); do
    go mod edit -replace="${m}=${m}@${staging}"
  done
  heartbeat "resolving and downloading the Kubernetes modules" modcache_status go mod tidy
  ldf="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $p.gitVersion=${KUBE_VERSION} -X $p.gitMajor=1 -X $p.gitMinor=${minor%%.*}"
  done
  mkdir -p "$K8S_BIN"
  export CGO_ENABLED=0
  go_build "compiling kubelet, kube-scheduler and kubectl" -trimpath -ldflags "$ldf" -o "$K8S_BIN/" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
  step_time "kubelet, kube-scheduler, kubectl" "$t"
fi

# --- containerd ----------------------------------------------------------------------------
if (( need_containerd )); then
  t=$(date +%s)
  log "building containerd $CONTAINERD_VERSION (containerd, containerd-shim-runc-v2, ctr)"
  m=github.com/containerd/containerd/v2
  module_dir "$CACHE_ROOT/containerd-${CONTAINERD_VERSION}/src" "$m" "$CONTAINERD_VERSION" \
    "$m/cmd/containerd" "$m/cmd/containerd-shim-runc-v2" "$m/cmd/ctr"
  heartbeat "resolving and downloading the containerd modules" modcache_status go mod tidy
  mkdir -p "$CONTAINERD_BIN"
  export CGO_ENABLED=0
  go_build "compiling containerd" -trimpath -tags no_btrfs \
    -ldflags "-s -w -X $m/version.Version=${CONTAINERD_VERSION}" -o "$CONTAINERD_BIN/" \
    "$m/cmd/containerd" "$m/cmd/containerd-shim-runc-v2" "$m/cmd/ctr"
  step_time containerd "$t"
fi

# --- runc ------------------------------------------------------------------------------------
if (( need_runc )); then
  t=$(date +%s)
  log "building runc $RUNC_VERSION (cgo, seccomp)"
  module_dir "$CACHE_ROOT/runc-${RUNC_VERSION}/src" github.com/opencontainers/runc "$RUNC_VERSION" \
    github.com/opencontainers/runc
  heartbeat "resolving and downloading the runc modules" modcache_status go mod tidy
  mkdir -p "$RUNC_BIN"
  export CGO_ENABLED=1
  go_build "compiling runc" -trimpath -tags "seccomp urfave_cli_no_docs" \
    -ldflags "-s -w -X main.version=${RUNC_VERSION#v}" -o "$RUNC_BIN/runc" github.com/opencontainers/runc
  step_time runc "$t"
fi

# --- CNI plugins -----------------------------------------------------------------------------
if (( need_cni )); then
  t=$(date +%s)
  log "building CNI plugins $CNI_PLUGINS_VERSION (bridge, host-local, loopback, portmap)"
  m=github.com/containernetworking/plugins
  module_dir "$CACHE_ROOT/cni-plugins-${CNI_PLUGINS_VERSION}/src" "$m" "$CNI_PLUGINS_VERSION" \
    "$m/plugins/main/bridge" "$m/plugins/ipam/host-local" "$m/plugins/main/loopback" "$m/plugins/meta/portmap"
  heartbeat "resolving and downloading the CNI plugins' modules" modcache_status go mod tidy
  mkdir -p "$CNI_BIN"
  export CGO_ENABLED=0
  go_build "compiling the CNI plugins" -trimpath -ldflags "-s -w" -o "$CNI_BIN/" \
    "$m/plugins/main/bridge" "$m/plugins/ipam/host-local" "$m/plugins/main/loopback" "$m/plugins/meta/portmap"
  step_time "CNI plugins" "$t"
fi

# --- pause -----------------------------------------------------------------------------------
if (( need_pause )); then
  t=$(date +%s)
  log "building pause (static, from k8s.io/kubernetes@${KUBE_VERSION} build/pause/linux/pause.c)"
  dir=$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  src="$dir/build/pause/linux/pause.c"
  [[ -f "$src" ]] || { log "no $src in the k8s.io/kubernetes module"; exit 1; }
  tag=$(sed -n 's/^TAG ?= *\(.*\)$/\1/p' "$dir/build/pause/Makefile" | head -n1)
  mkdir -p "$PAUSE_BIN"
  gcc -Os -Wall -Werror -static -DVERSION="v${tag:-unknown}" -o "$PAUSE_BIN/pause" "$src"
  strip "$PAUSE_BIN/pause" 2>/dev/null || true
  echo "${tag}" > "$PAUSE_BIN/version"
  step_time pause "$t"
fi

log "built in $(( $(date +%s) - start ))s"
report
