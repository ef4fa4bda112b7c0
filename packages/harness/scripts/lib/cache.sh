# Where the build scripts keep what they build. Source it; it sets CACHE_ROOT:
# $CONTROL_PLANE_CACHE, else ~/.cache/lifelease (under $XDG_CACHE_HOME when set; the same
# folder ../../src/binaries.ts cacheRoot() reads).
#
# The folder was ~/.cache/k8s-leader-elector before the package was named lifelease: a warm
# one is still used until it is moved (mv ~/.cache/k8s-leader-elector ~/.cache/lifelease).

CACHE_BASE="${XDG_CACHE_HOME:-$HOME/.cache}"
DEFAULT_CACHE="$CACHE_BASE/lifelease"
if [ ! -d "$DEFAULT_CACHE" ] && [ -d "$CACHE_BASE/k8s-leader-elector" ]; then
  DEFAULT_CACHE="$CACHE_BASE/k8s-leader-elector"
fi
CACHE_ROOT="${CONTROL_PLANE_CACHE:-$DEFAULT_CACHE}"
