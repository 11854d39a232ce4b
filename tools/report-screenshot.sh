#!/usr/bin/env bash
# Renders a popmesh-perf report.html in headless Chromium and saves a full-page PNG next to it,
# to check that the plots draw (the report is one self-contained page: inline SVG, no JS).
#
#   tools/report-screenshot.sh perf/out/data-plane-<timestamp>/report.html [OUT.png] [HEIGHT]
#
# Installs Debian's chromium when it is missing (root). HEIGHT is the page height in pixels to
# capture (default 6000; the report is one long column).
set -euo pipefail

report=${1:?usage: tools/report-screenshot.sh REPORT.html [OUT.png] [HEIGHT]}
[[ -f $report ]] || { echo "report-screenshot: $report does not exist" >&2; exit 64; }
out=${2:-${report%.html}.png}
height=${3:-6000}

browser=$(command -v chromium || command -v chromium-browser || true)
if [[ -z $browser ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "report-screenshot: chromium is not installed; run as root or: apt-get install chromium" >&2
    exit 1
  fi
  echo "report-screenshot: installing chromium"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  browser=$(command -v chromium)
fi

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --user-data-dir="$profile" --window-size="1280,$height" \
  --screenshot="$(realpath -m "$out")" "file://$(realpath "$report")" 2>/dev/null
[[ -s $out ]] || { echo "report-screenshot: chromium wrote no screenshot" >&2; exit 1; }
echo "$out"
