# Finding Go for a build script. Source it from a script that defines `log` (one line to
# stderr).
#
#   require_go LINE...   put Go on PATH, also from its standard install folder
#                        ($GO_INSTALL_DIR, default /usr/local/go/bin); when there is none,
#                        log "Go is not installed, and " followed by LINE... (what is
#                        missing and how to do without Go), and exit 2

require_go() {
  command -v go >/dev/null 2>&1 && return 0
  local dir="${GO_INSTALL_DIR:-/usr/local/go/bin}"
  if [[ -x "$dir/go" ]]; then
    export PATH="$PATH:$dir"
    return 0
  fi
  log "Go is not installed, and $1"
  shift
  local line
  for line in "$@"; do log "$line"; done
  exit 2
}
