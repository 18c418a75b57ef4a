# Sourced by the scripts that build Go tools from the module proxy (kube, promtool).
# find_go prints a Go >= 1.21 from PATH or /usr/local/go/bin, or nothing. Any such Go will do:
# with GOTOOLCHAIN=auto (Go's default) it fetches the toolchain the module's go.mod asks for
# through the module proxy, so Debian's older golang-go is enough.
find_go() {
  local candidate
  for candidate in "$(command -v go || true)" /usr/local/go/bin/go; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] &&
      "$candidate" env GOVERSION 2>/dev/null | grep -Eq '^go1\.(2[1-9]|[3-9][0-9])'; then
      echo "$candidate"
      return
    fi
  done
}
