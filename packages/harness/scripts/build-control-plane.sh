#!/usr/bin/env bash
# Builds etcd, kube-apiserver and kube-controller-manager (and kustomize, which renders
# manifests/ in the tests) from the Go module proxy into a versioned cache outside the
# repository, once. Prints the control plane's bin directory on stdout.
#
#   KUBE_VERSION   Kubernetes version to build   (default below)
#   ETCD_VERSION   etcd version to build          (default below)
#   KUSTOMIZE_VERSION                             (default below; v5.8.2+ needs Go 1.27)
#   CONTROL_PLANE_CACHE  cache root               (default ~/.cache/lifelease)
#
# Users who already have binaries skip this script: see ../src/binaries.ts
# (KUBEBUILDER_ASSETS, KUBE_CONTROLLER_MANAGER).
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.36.3}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.8.1}"
# shellcheck source=lib/cache.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cache.sh"
KEY="k8s-${KUBE_VERSION}-etcd-${ETCD_VERSION}"
BIN="$CACHE_ROOT/$KEY/bin"
KUSTOMIZE_BIN="$CACHE_ROOT/kustomize-${KUSTOMIZE_VERSION}/bin"
log() { printf '[control-plane-build] %s\n' "$*" >&2; }
# shellcheck source=lib/progress.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/progress.sh"
# shellcheck source=lib/go.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/go.sh"

cache_lock control-plane
if [[ -x "$BIN/etcd" && -x "$BIN/kube-apiserver" && -x "$BIN/kube-controller-manager" && -x "$KUSTOMIZE_BIN/kustomize" ]]; then
  log "cached: $BIN"
  echo "$BIN"
  exit 0
fi

require_go "no control-plane binaries were found in $BIN." \
  "Either install Go >= 1.26 (https://go.dev/doc/install) and run this again," \
  "or point KUBEBUILDER_ASSETS at a folder holding etcd and kube-apiserver" \
  "and KUBE_CONTROLLER_MANAGER at a kube-controller-manager binary."

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
WORK="$CACHE_ROOT/$KEY/src"
mkdir -p "$BIN" "$WORK/k8s" "$WORK/etcd"
start=$(date +%s)

# --- kube-apiserver and kube-controller-manager -----------------------------------------
# k8s.io/kubernetes requires its staging modules at v0.0.0; pin every one of them to the
# matching v0.x release, reading the list from the real go.mod rather than hard-coding it.
minor="${KUBE_VERSION#v1.}"   # 36.3
staging="v0.${minor}"          # v0.36.3
if [[ ! -x "$BIN/kube-apiserver" || ! -x "$BIN/kube-controller-manager" ]]; then
  log "building kube-apiserver and kube-controller-manager $KUBE_VERSION (a cold build takes a while on 2 cores)"
  cd "$WORK/k8s"
  heartbeat "downloading k8s.io/kubernetes $KUBE_VERSION" modcache_status \
    sh -c 'go mod download -json "$1" > "$0"' "$WORK/k8s/download.json" "k8s.io/kubernetes@${KUBE_VERSION}"
  gomod=$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' "$WORK/k8s/download.json")
  [[ -f "$gomod" ]] || { log "could not download k8s.io/kubernetes@${KUBE_VERSION}"; exit 1; }
  goline=$(sed -n 's/^go \(.*\)$/\1/p' "$gomod" | head -n1)
  cat > go.mod <<GOMOD
module local.test/k8sbins

go ${goline}

require k8s.io/kubernetes ${KUBE_VERSION}
GOMOD
  for m in $(sed -n 's/^[[:space:]]*\(k8s\.io\/[a-z0-9-]*\) v0\.0\.0$/\1/p' "$gomod" | sort -u); do
    go mod edit -replace="${m}=${m}@${staging}"
  done
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
  heartbeat "resolving and downloading the Kubernetes modules" modcache_status go mod tidy
  ldf="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $p.gitVersion=${KUBE_VERSION} -X $p.gitMajor=1 -X $p.gitMinor=${minor%%.*}"
  done
  go_build "compiling kube-apiserver and kube-controller-manager" -trimpath -ldflags "$ldf" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
fi

# --- etcd ---------------------------------------------------------------------------------
if [[ ! -x "$BIN/etcd" ]]; then
  log "building etcd $ETCD_VERSION"
  cd "$WORK/etcd"
  cat > go.mod <<GOMOD
module local.test/etcdbin

go 1.25

require go.etcd.io/etcd/server/v3 ${ETCD_VERSION}
GOMOD
  cat > tools.go <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  heartbeat "resolving and downloading the etcd modules" modcache_status go mod tidy
  go_build "compiling etcd" -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
fi

# --- kustomize (renders manifests/ for the tests; not part of the control plane) ---------
if [[ ! -x "$KUSTOMIZE_BIN/kustomize" ]]; then
  log "building kustomize $KUSTOMIZE_VERSION"
  mkdir -p "$KUSTOMIZE_BIN"
  heartbeat "downloading and compiling kustomize" modcache_status \
    env GOBIN="$KUSTOMIZE_BIN" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kustomize/kustomize/v5@${KUSTOMIZE_VERSION}"
fi

log "built in $(( $(date +%s) - start ))s: $BIN"
echo "$BIN"
