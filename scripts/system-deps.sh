#!/bin/sh
# Installs the Debian packages the test suite uses, when missing. Never downloads a browser itself.
need=""
command -v docker-compose >/dev/null 2>&1 || need="$need docker-compose"
command -v chromium >/dev/null 2>&1 || need="$need chromium"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing$need (needs root and apt-get); the tests that use them will fail" >&2
  exit 0
fi
echo "system-deps: installing$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends $need >/dev/null 2>&1 || echo "system-deps: apt-get install$need failed" >&2
