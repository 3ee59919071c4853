# Sourced by the bench scripts (from the repository root).

# install_packages PKG...: apt-get install the Debian packages given,
# without starting their services; an administrator's own policy-rc.d is
# put back afterwards, as scripts/install-test-deps.sh does. Output goes to
# /dev/null; the exit status is apt-get's.
install_packages() {
  [ $# -gt 0 ] || return 0
  local policy=/usr/sbin/policy-rc.d saved="" rc=0
  if [ -e "$policy" ]; then saved=$(mktemp); cp -p "$policy" "$saved"; fi
  printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1; } || rc=$?
  if [ -n "$saved" ]; then cp -p "$saved" "$policy"; rm -f "$saved"; else rm -f "$policy"; fi
  return $rc
}
