#!/usr/bin/env bash
# Builds helm (renders and installs charts/lifelease in the tests) and promtool (checks and
# unit-tests the shipped Prometheus rules) from the Go module proxy into the versioned cache,
# once, as scripts/build-control-plane.sh does for the control plane and kustomize. Prints
# the two bin directories on stdout, one per line (helm's first).
#
#   HELM_VERSION        helm.sh/helm/v4 release to build          (default below)
#   PROMETHEUS_VERSION  Prometheus release whose promtool to build (default below)
#   PROMETHEUS_OPERATOR_VERSION  whose CRDs (PodMonitor, ServiceMonitor, PrometheusRule) the
#                       tests install to validate the shipped monitoring objects (default below)
#   HELM, PROMTOOL      binaries you already have: that tool is not built
#   CONTROL_PLANE_CACHE cache root                                (default ~/.cache/lifelease)
#
# promtool is built with Prometheus's own build tag `remove_all_sd`: the cloud service
# discoveries (AWS, Azure, GCE, ...) are left out; rule checking and rule unit tests do not
# use them, and the build is several times smaller.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v4.3.2}"
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v3.16.0}"
# shellcheck source=lib/cache.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/cache.sh"
HELM_BIN="$CACHE_ROOT/helm-${HELM_VERSION}/bin"
PROMTOOL_BIN="$CACHE_ROOT/promtool-${PROMETHEUS_VERSION}/bin"
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
CRDS="$CACHE_ROOT/prometheus-operator-crds-${PROMETHEUS_OPERATOR_VERSION}"
CRD_FILES=(monitoring.coreos.com_podmonitors.yaml monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_prometheusrules.yaml)
log() { printf '[platform-tools-build] %s\n' "$*" >&2; }
# shellcheck source=lib/progress.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/progress.sh"
# shellcheck source=lib/go.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/go.sh"

cache_lock platform-tools
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

need_crds=false
for f in "${CRD_FILES[@]}"; do [[ -f "$CRDS/$f" ]] || need_crds=true; done

if ! $need_helm && ! $need_promtool && ! $need_crds; then
  log "cached: $HELM_BIN $PROMTOOL_BIN"
  printf '%s\n%s\n' "$HELM_BIN" "$PROMTOOL_BIN"
  exit 0
fi

missing=()
$need_helm && missing+=("  no $HELM_BIN/helm")
$need_promtool && missing+=("  no $PROMTOOL_BIN/promtool")
require_go "helm or promtool is missing from the cache:" "${missing[@]}" \
  "Either install Go >= 1.26 (https://go.dev/doc/install) and run this again," \
  "or set HELM and PROMTOOL to binaries you have (helm v3.14+ or v4, promtool v3)."

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
start=$(date +%s)

# Each tool is built in a throwaway module that requires its release (neither go.mod has
# replace directives, so this resolves exactly what `go install <pkg>@<version>` would), so
# that go_build can count the packages left to compile and print progress every 10 s.
# Modules are resolved for that one package and its build tags (`go list -deps`), not with
# `go mod tidy`, which would fetch the dependencies of every tag and test (hundreds of MB of
# cloud SDKs for Prometheus).
# build_tool NAME MODULE VERSION PACKAGE BIN_DIR TAGS LDFLAGS
build_tool() {
  local name=$1 module=$2 version=$3 package=$4 bin=$5 tags=$6 ldflags=$7
  local work="$CACHE_ROOT/${name}-src"
  mkdir -p "$work" "$bin"
  cd "$work"
  rm -f go.mod go.sum tools.go
  cat >go.mod <<GOMOD
module local.test/${name}bin

go 1.26

require ${module} ${version}
GOMOD
  heartbeat "resolving and downloading the ${name} modules" modcache_status \
    sh -c 'go list -deps -tags "$0" "$1" >/dev/null' "$tags" "$package"
  go_build "compiling ${name}" -trimpath -tags "$tags" -ldflags "$ldflags" -o "$bin/${name}" "$package"
}

if $need_helm; then
  log "building helm $HELM_VERSION"
  t=$(date +%s)
  build_tool helm helm.sh/helm/v4 "$HELM_VERSION" helm.sh/helm/v4/cmd/helm "$HELM_BIN" '' \
    "-s -w -X helm.sh/helm/v4/internal/version.version=${HELM_VERSION}"
  log "helm built in $(($(date +%s) - t))s"
fi

if $need_promtool; then
  # Prometheus v3.X.Y is the Go module version v0.3XX.Y (v3.16.0 -> v0.316.0).
  IFS=. read -r major minor patch <<<"${PROMETHEUS_VERSION#v}"
  module_version="v0.$((major * 100 + minor)).${patch}"
  log "building promtool $PROMETHEUS_VERSION (module $module_version)"
  t=$(date +%s)
  build_tool promtool github.com/prometheus/prometheus "$module_version" \
    github.com/prometheus/prometheus/cmd/promtool "$PROMTOOL_BIN" remove_all_sd \
    "-s -w -X github.com/prometheus/common/version.Version=${PROMETHEUS_VERSION#v} -X github.com/prometheus/common/version.Branch=release"
  log "promtool built in $(($(date +%s) - t))s"
fi

# prometheus-operator's CRDs, from its Go module (the same source, Apache-2.0): the tests
# install them on the local control plane so that the API server validates our objects.
if $need_crds; then
  log "fetching the prometheus-operator $PROMETHEUS_OPERATOR_VERSION CRDs"
  dir=$(cd "$CACHE_ROOT" && GOFLAGS=-mod=mod go mod download -json \
    "github.com/prometheus-operator/prometheus-operator@${PROMETHEUS_OPERATOR_VERSION}" |
    sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [[ -d "$dir" ]] || { log "could not download prometheus-operator $PROMETHEUS_OPERATOR_VERSION"; exit 1; }
  mkdir -p "$CRDS"
  for f in "${CRD_FILES[@]}"; do cp "$dir/example/prometheus-operator-crd/$f" "$CRDS/$f"; done
  chmod u+w "$CRDS"/*.yaml
fi

log "built in $(($(date +%s) - start))s"
printf '%s\n%s\n' "$HELM_BIN" "$PROMTOOL_BIN"
