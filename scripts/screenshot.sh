#!/usr/bin/env bash
# Renders a page (a segan report's index.html) in headless Chromium, as a person opening it would
# see it, and writes a PNG of the whole page (up to HEIGHT pixels):
#   bash scripts/screenshot.sh RUN/report/index.html report.png [WIDTH] [HEIGHT]
# Needs Debian's Chromium (apt-get install chromium). The page loads with the network switched
# off, so a picture that shows is a picture the report carries with it.
set -euo pipefail
page=$(realpath "$1")
out=$(realpath -m "$2")
width=${3:-1400}
height=${4:-4000}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
  echo "screenshot.sh: no Chromium found; install it with: apt-get install chromium" >&2
  exit 2
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
  --proxy-server="127.0.0.1:9" --proxy-bypass-list="<-loopback>" --virtual-time-budget=5000 \
  --window-size="${width},${height}" --screenshot="$out" "file://$page" 2>/dev/null
echo "$out"
