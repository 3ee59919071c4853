#!/usr/bin/env bash
# Installs the real peers the tests drive (Debian packages), only those
# missing. Idempotent; needs root (or passwordless sudo); no stdin.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# binary-to-check  package
peers=(
  "redis-server redis-server"
  "redis-cli redis-tools"
  "/usr/sbin/sshd openssh-server"
  "ssh openssh-client"
  "ssh-keygen openssh-client"
  "nginx nginx"
  "curl curl"
  "openssl openssl"
  "haproxy haproxy"
  "etcd etcd-server"
  "promtool prometheus"
  "/usr/sbin/mosquitto mosquitto"
  "mosquitto_pub mosquitto-clients"
  "microsocks microsocks"
  "swaks swaks"
  "/usr/sbin/dnsmasq dnsmasq-base"
  "dig bind9-dnsutils"
  "turnserver coturn"
  "turnutils_stunclient coturn"
  "sipsak sipsak"
  "kamailio kamailio"
  "ffmpeg ffmpeg"
  "/usr/lib/nginx/modules/ngx_rtmp_module.so libnginx-mod-rtmp"
  "/usr/sbin/vsftpd vsftpd"
  "lftp lftp"
  "/usr/lib/postgresql/*/bin/initdb postgresql"
  "psql postgresql-client"
  "/usr/sbin/openvpn openvpn"
  "wg wireguard-tools"
  "wireguard-go wireguard-go"
  "xvfb-run xvfb"
  "xauth xauth"
  "xrdp xrdp"
  "xfreerdp freerdp2-x11"
  "systemd-socket-activate systemd"
  "systemd-analyze systemd"
  "ip iproute2"
  "nft nftables"
  "gtlsclient ngtcp2-client"
  "/usr/sbin/gtlsserver ngtcp2-server"
  "/usr/sbin/sslh sslh"
  "chromium chromium"
)

missing=()
for entry in "${peers[@]}"; do
  bin=${entry%% *}; pkg=${entry##* }
  if command -v "$bin" >/dev/null 2>&1 || compgen -G "$bin" >/dev/null; then
    echo "present:   $pkg ($bin)"
  elif [[ " ${missing[*]-} " != *" $pkg "* ]]; then
    missing+=("$pkg")
  fi
done

# Go modules that tests build helpers from (a module of their own, outside
# the main go.mod), fetched here so no timed test downloads them.
fetch_go_helpers() {
  local here; here=$(cd "$(dirname "$0")/.." && pwd)
  go -C "$here/protocols/testdata/quicgo" mod download
}

if [ ${#missing[@]} -eq 0 ]; then
  fetch_go_helpers
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
# Install without starting the packages' system services. An existing
# policy-rc.d (the administrator's) is kept aside and put back afterwards.
policy=/usr/sbin/policy-rc.d
saved=""
if [ -e "$policy" ]; then
  saved=$(mktemp /tmp/policy-rc.d.XXXXXX)
  $SUDO cp -p "$policy" "$saved"
fi
restore_policy() {
  if [ -n "$saved" ]; then $SUDO cp -p "$saved" "$policy"; $SUDO rm -f "$saved"; else $SUDO rm -f "$policy"; fi
}
trap restore_policy EXIT
printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
$SUDO chmod +x "$policy"
install() { $SUDO apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends "$@"; }
if ! install "${missing[@]}" >/tmp/protoplex-apt.log 2>&1; then
  # A fresh machine may have no package lists yet.
  $SUDO apt-get update -q >>/tmp/protoplex-apt.log 2>&1
  install "${missing[@]}" >>/tmp/protoplex-apt.log 2>&1 || { cat /tmp/protoplex-apt.log; exit 1; }
fi
for p in "${missing[@]}"; do echo "installed: $p"; done
fetch_go_helpers
