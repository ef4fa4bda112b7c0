#!/usr/bin/env bash
# Builds helm (renders and installs charts/lifelease in the tests) and promtool (checks and
# unit-tests the shipped Prometheus rules) from the Go module proxy into the versioned cache,
# once, as scripts/build-control-plane.sh does for the control plane and kustomize. Prints
# the two bin directories on stdout, one per line (helm's first).
#
#   HELM_VERSION        helm.sh/helm/v4 release to build          (default below)
#   PROMETHEUS_VERSION  Prometheus release whose promtool to build (default below)
#   HELM, PROMTOOL      binaries you already have: that tool is not built
#   CONTROL_PLANE_CACHE cache root                                (default ~/.cache/k8s-leader-elector)
#
# promtool is built with Prometheus's own build tag `remove_all_sd`: the cloud service
# discoveries (AWS, Azure, GCE, ...) are left out; rule checking and rule unit tests do not
# use them, and the build is several times smaller.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v4.3.2}"
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v3.16.0}"
CACHE_ROOT="${CONTROL_PLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/k8s-leader-elector}"
HELM_BIN="$CACHE_ROOT/helm-${HELM_VERSION}/bin"
PROMTOOL_BIN="$CACHE_ROOT/promtool-${PROMETHEUS_VERSION}/bin"
log() { printf '[platform-tools-build] %s\n' "$*" >&2; }

need_helm=true
need_promtool=true
if [[ -n "${HELM:-}" ]]; then
  [[ -x "$HELM" ]] || { log "HELM=$HELM is not an executable file"; exit 2; }
  need_helm=false
  HELM_BIN="$(dirname "$HELM")"
elif [[ -x "$HELM_BIN/helm" ]]; then
  need_helm=false
fi
if [[ -n "${PROMTOOL:-}" ]]; then
  [[ -x "$PROMTOOL" ]] || { log "PROMTOOL=$PROMTOOL is not an executable file"; exit 2; }
  need_promtool=false
  PROMTOOL_BIN="$(dirname "$PROMTOOL")"
elif [[ -x "$PROMTOOL_BIN/promtool" ]]; then
  need_promtool=false
fi

if ! $need_helm && ! $need_promtool; then
  log "cached: $HELM_BIN $PROMTOOL_BIN"
  printf '%s\n%s\n' "$HELM_BIN" "$PROMTOOL_BIN"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  if [[ -x /usr/local/go/bin/go ]]; then
    export PATH="$PATH:/usr/local/go/bin"
  else
    log "Go is not installed, and helm or promtool is missing from the cache:"
    $need_helm && log "  no $HELM_BIN/helm"
    $need_promtool && log "  no $PROMTOOL_BIN/promtool"
    log "Either install Go >= 1.26 (https://go.dev/doc/install) and run this again,"
    log "or set HELM and PROMTOOL to binaries you have (helm v3.14+ or v4, promtool v3)."
    exit 2
  fi
fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
start=$(date +%s)

# go install pkg@version works for both: neither go.mod has replace directives.
if $need_helm; then
  log "building helm $HELM_VERSION"
  mkdir -p "$HELM_BIN"
  t=$(date +%s)
  GOBIN="$HELM_BIN" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=${HELM_VERSION}" \
    "helm.sh/helm/v4/cmd/helm@${HELM_VERSION}"
  log "helm built in $(($(date +%s) - t))s"
fi

if $need_promtool; then
  # Prometheus v3.X.Y is the Go module version v0.3XX.Y (v3.16.0 -> v0.316.0).
  IFS=. read -r major minor patch <<<"${PROMETHEUS_VERSION#v}"
  module_version="v0.$((major * 100 + minor)).${patch}"
  log "building promtool $PROMETHEUS_VERSION (module $module_version)"
  mkdir -p "$PROMTOOL_BIN"
  t=$(date +%s)
  GOBIN="$PROMTOOL_BIN" go install -trimpath -tags remove_all_sd \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=${PROMETHEUS_VERSION#v} -X github.com/prometheus/common/version.Branch=release" \
    "github.com/prometheus/prometheus/cmd/promtool@${module_version}"
  log "promtool built in $(($(date +%s) - t))s"
fi

log "built in $(($(date +%s) - start))s"
printf '%s\n%s\n' "$HELM_BIN" "$PROMTOOL_BIN"
