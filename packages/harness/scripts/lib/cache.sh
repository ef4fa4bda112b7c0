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

# cache_lock NAME: one build of NAME at a time in this cache. `npm test` starts its two phases
# (the shared control plane and the real node's) at once, and on a cold cache each would
# otherwise run the same build beside the other, in the same source folder. Waits while
# another process holds it, with a line every PROGRESS_EVERY seconds (the caller's `log`);
# the caller checks the cache after it, so what the other built is found, not built again.
# The lock is held until the script's process ends.
cache_lock() {
  local name=$1 since=$SECONDS next=0
  mkdir -p "$CACHE_ROOT"
  exec {CACHE_LOCK_FD}>"$CACHE_ROOT/.$name.lock"
  until flock -n "$CACHE_LOCK_FD"; do
    if ((SECONDS - since >= next)); then
      log "waiting for another build of the $name binaries in $CACHE_ROOT to end ($((SECONDS - since))s so far)"
      next=$((next + ${PROGRESS_EVERY:-10}))
    fi
    sleep 1
  done
}
