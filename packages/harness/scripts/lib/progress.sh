# Progress for long build steps. Source it from a build script that defines `log` (one line
# to stderr). Every long step prints a plain line at least every PROGRESS_EVERY seconds
# (default 10): the same on a terminal and in a CI log, so nobody stares at a silent screen.
#
#   heartbeat LABEL STATUS_FN CMD...   run CMD; print "LABEL: <STATUS_FN>, <elapsed>" meanwhile
#   go_build LABEL GO_BUILD_ARGS...    `go build -v`, printing "N/T packages compiled" and an
#                                      estimate of the time left
#   modcache_status                    a STATUS_FN: how much the Go module cache has downloaded

PROGRESS_EVERY="${PROGRESS_EVERY:-10}"

# fmt_secs 75 -> 1m15s
fmt_secs() {
  local s=$1
  if ((s >= 60)); then printf '%dm%02ds' $((s / 60)) $((s % 60)); else printf '%ds' "$s"; fi
}

# Waits for process $1 to end, up to PROGRESS_EVERY seconds less 2 (left for computing and
# printing the status line); returns 0 once it has ended. Timed by the wall clock, not by a
# count of sleeps: at a load average of 20 each `sleep 0.25` took longer, and lines came 14 to
# 18 s apart.
_ended_within_period() {
  local pid=$1 wait_us deadline
  wait_us=$(((PROGRESS_EVERY > 2 ? PROGRESS_EVERY - 2 : 1) * 1000000))
  deadline=$((${EPOCHREALTIME/./} + wait_us))
  while ((${EPOCHREALTIME/./} < deadline)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.25
  done
  return 1
}

# heartbeat LABEL STATUS_FN CMD...: runs CMD in the background, and until it ends prints
# "LABEL: <output of STATUS_FN>, <elapsed>" every PROGRESS_EVERY seconds. Returns CMD's status.
heartbeat() {
  local label=$1 status_fn=$2
  shift 2
  local start=$SECONDS pid status
  "$@" &
  pid=$!
  # Ctrl-C or a kill of the script also ends the step it is waiting on.
  trap 'kill "$pid" 2>/dev/null' INT TERM
  until _ended_within_period "$pid"; do
    status=$("$status_fn")
    log "$label: ${status:+$status, }$(fmt_secs $((SECONDS - start))) elapsed"
  done
  trap - INT TERM
  wait "$pid"
}

# A STATUS_FN for steps that download Go modules.
modcache_status() {
  local dir
  dir="$(go env GOMODCACHE)/cache/download"
  [[ -d $dir ]] || return 0
  printf '%s MiB of Go modules downloaded so far' "$(du -sm "$dir" 2>/dev/null | cut -f1)"
}

# A STATUS_FN for steps that only say they are still going.
no_status() { :; }

# go_build LABEL ARGS...: `go build -v ARGS...` with progress. The total is the number of
# packages `go list` reports stale (what really needs compiling, the standard library
# included, so a warm cache shows a small total); `-v` names each package as it is compiled.
go_build() {
  local label=$1
  shift
  local list_flags=() pkgs=() pending='' arg
  for arg in "$@"; do
    case "$pending" in
      drop) pending='' && continue ;;
      keep) list_flags+=("$arg") && pending='' && continue ;;
    esac
    case "$arg" in
      -o | -ldflags | -gcflags) pending=drop ;; # output and link flags do not change what compiles
      -tags) list_flags+=("$arg") && pending=keep ;;
      -*) list_flags+=("$arg") ;;
      *) pkgs+=("$arg") ;;
    esac
  done

  local out
  out=$(mktemp)
  log "$label: working out what needs compiling"
  heartbeat "$label: listing packages" no_status \
    sh -c 'go list -deps -f "{{if .Stale}}stale{{end}}" "$@" > "$0"' "$out" "${list_flags[@]}" "${pkgs[@]}"
  local total
  total=$(grep -c stale "$out" || true)
  log "$label: $total packages to compile"

  local start=$SECONDS pid
  go build -v "$@" 2>"$out" &
  pid=$!
  trap 'kill "$pid" 2>/dev/null' INT TERM
  until _ended_within_period "$pid"; do
    local done_ elapsed left=''
    # -v prints one import path per line; errors have spaces or colons in them.
    done_=$(grep -cvE '[[:space:]:]' "$out" || true)
    elapsed=$((SECONDS - start))
    if ((total > 0 && done_ > 0 && done_ < total)); then
      left=", about $(fmt_secs $((elapsed * (total - done_) / done_))) left"
    fi
    log "$label: $done_/$total packages compiled, $(fmt_secs "$elapsed") elapsed$left"
  done
  trap - INT TERM
  local status=0
  wait "$pid" || status=$?
  if ((status != 0)); then
    grep -E '[[:space:]:]' "$out" | tail -n 40 >&2
    rm -f "$out"
    log "$label: go build failed (exit $status)"
    return "$status"
  fi
  rm -f "$out"
  log "$label: compiled in $(fmt_secs $((SECONDS - start)))"
}
