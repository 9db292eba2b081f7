#!/usr/bin/env bash
# Installs the system packages the test suite drives, if they are missing:
#   chromium           the dashboard's end-to-end test (playwright-core, /usr/bin/chromium)
#   python3-websockets the Python example client of the WebSocket protocol
# Debian packages only; nothing is downloaded from anywhere else.
set -uo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
/usr/bin/python3 -c 'import websockets' 2>/dev/null || missing+=(python3-websockets)
[ ${#missing[@]} -eq 0 ] && { echo "test setup: chromium and python3-websockets present"; exit 0; }

echo "test setup: installing ${missing[*]} from Debian's packages"
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
