#!/usr/bin/env bash
# Render keytrail's HTML report in headless Chromium and check what the browser made of it:
# the table and the SVG charts are in the rendered DOM, the page asked the network for nothing,
# the console logged no error, and a screenshot was drawn.
#
#   scripts/check_html_report.sh            # uses $CARGO_TARGET_DIR/debug/keytrail (or target/)
#   KEYTRAIL=path/to/keytrail scripts/check_html_report.sh
#
# Needs: chromium (Debian: apt-get install chromium), python3.
set -euo pipefail
cd "$(dirname "$0")/.."
KEYTRAIL=${KEYTRAIL:-${CARGO_TARGET_DIR:-target}/debug/keytrail}
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ ! -x "$KEYTRAIL" ]; then
  echo "check_html_report: no keytrail binary at $KEYTRAIL (cargo build -p keytrail-cli)" >&2
  exit 2
fi
if [ -z "$CHROMIUM" ]; then
  echo "check_html_report: chromium not found (apt-get install chromium)" >&2
  exit 2
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$KEYTRAIL" -q ingest testdata/sample --lake "$tmp/lake" >/dev/null
"$KEYTRAIL" report last-used --lake "$tmp/lake" --as-of 2024-12-01 \
  --inventory testdata/inventory/list-access-keys.json \
  --inventory testdata/inventory/credential-report.csv -o "$tmp/report.html"

chromium() {
  # Every name lookup fails, so a request for anything but the file itself would show up as
  # an error in the console and in the net log.
  "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --disable-default-apps --host-resolver-rules='MAP * ~NOTFOUND' \
    --user-data-dir="$tmp/profile" --enable-logging=stderr --v=0 \
    --virtual-time-budget=2000 "$@" "file://$tmp/report.html"
}
chromium --dump-dom --log-net-log="$tmp/net.json" >"$tmp/dom.html" 2>"$tmp/dom.log"
chromium --screenshot="$tmp/shot.png" --window-size=1400,1000 >/dev/null 2>"$tmp/shot.log"

python3 - "$tmp" <<'PY'
import json, re, sys
tmp = sys.argv[1]
src = open(f"{tmp}/report.html", encoding="utf-8").read()
dom = open(f"{tmp}/dom.html", encoding="utf-8").read()
logs = open(f"{tmp}/dom.log", encoding="utf-8", errors="replace").read()
problems = []

def check(ok, what):
    if not ok:
        problems.append(what)

check('<table id="report">' in dom, "the report table is not in the rendered DOM")
rows = dom.count("<tr>") - 1
check(rows == 26, f"the rendered table has {rows} key rows, expected 26")
svgs = dom.count("<svg")
check(svgs == rows + 1, f"{svgs} SVG charts rendered, expected {rows + 1} (one per key and the total)")
check(svgs == src.count("<svg"), "the browser dropped SVG elements of the source")
check(dom.count('class="bar"') == src.count('class="bar"') > 0, "chart bars missing from the DOM")
check("2024-11-30: 30 calls" in dom, "ci-deploy's busiest day is not in its chart")
check("<script" not in src, "the report has a script")
check(not re.search(r'\b(src|href)\s*=', src), "the report references another resource")

# Console errors, failed loads.
for line in logs.splitlines():
    if "CONSOLE" in line or "Failed to load" in line or ("net::ERR_" in line):
        problems.append(f"browser log: {line.strip()}")

# The net log: every URL the page asked for. The browser's own background requests (update
# checks, time) carry no origin ("not an origin"); the page's carry its file origin ("null").
try:
    log = json.load(open(f"{tmp}/net.json", encoding="utf-8"))
    fetched = set()
    for e in log.get("events", []):
        p = e.get("params") or {}
        if isinstance(p.get("url"), str) and p.get("initiator") not in (None, "not an origin"):
            fetched.add(p["url"])
    fetched = sorted(u for u in fetched if not u.startswith(("file:", "data:", "about:")))
    check(not fetched, f"the page requested {fetched}")
except (OSError, ValueError) as e:
    problems.append(f"no readable net log: {e}")

import os
size = os.path.getsize(f"{tmp}/shot.png") if os.path.exists(f"{tmp}/shot.png") else 0
check(size > 20_000, f"the screenshot is {size} bytes: nothing drawn?")

if problems:
    print("check_html_report: FAILED", *problems, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"check_html_report: ok ({rows} rows, {svgs} SVG charts rendered, no request, screenshot {size} bytes)")
PY
