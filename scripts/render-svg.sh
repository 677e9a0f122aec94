#!/bin/sh
# Renders an SVG (e.g. ptguard's ownership map) to PNG with headless Chromium, at the size the
# SVG declares (width/height of its root element), scaled by SCALE (default 1).
#   scripts/render-svg.sh map.svg map.png [SCALE]
# Needs Debian's chromium: apt-get install -y --no-install-recommends chromium
# (not a dependency of make test).
set -eu
if [ $# -lt 2 ]; then
  echo "usage: $0 IN.svg OUT.png [SCALE]" >&2
  exit 2
fi
in=$1 out=$2 scale=${3:-1}
[ -r "$in" ] || { echo "$0: cannot read $in" >&2; exit 2; }
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "$0: no chromium (apt-get install -y --no-install-recommends chromium)" >&2; exit 2; }
# The root element's width and height, in pixels.
dims=$(tr '\n' ' ' <"$in" | sed -n 's/.*<svg[^>]*width="\([0-9.]*\)"[^>]*height="\([0-9.]*\)".*/\1 \2/p')
[ -n "$dims" ] || { echo "$0: $in has no width and height on its <svg> element" >&2; exit 2; }
w=$(echo "$dims" | awk '{printf "%d", $1 + 0.999}')
h=$(echo "$dims" | awk '{printf "%d", $2 + 0.999}')
abs=$(cd "$(dirname "$in")" && pwd)/$(basename "$in")
outabs=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# An HTML page holding the SVG at its own size, so no margin or scrollbar gets into the picture.
cat >"$tmp/page.html" <<HTML
<!DOCTYPE html><html><head><style>html,body{margin:0;padding:0;background:white}img{display:block}</style></head>
<body><img src="file://$abs" width="$w" height="$h"></body></html>
HTML
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --allow-file-access-from-files \
  --user-data-dir="$tmp/profile" --force-device-scale-factor="$scale" \
  --window-size="$w,$h" --screenshot="$outabs" "file://$tmp/page.html" >"$tmp/log" 2>&1 || {
  cat "$tmp/log" >&2
  exit 1
}
[ -s "$outabs" ] || { cat "$tmp/log" >&2; echo "$0: no PNG written" >&2; exit 1; }
echo "$out: ${w}x${h} (scale $scale)"
