#!/usr/bin/env python3
"""Several loadtest runs in one picture: fills the loadtest's HTML report page
(loadtest/src/parent/report/report.html, the page `loadtest --html` writes for one run) with
several `loadtest --json` reports, overlaid.

    benches/report_html.py OUT.html NAME=REPORT.json [NAME=REPORT.json ...]

Used by benches/compare.sh (Herald, uWebSockets.js and Node ws per row). The page needs no
network: the chart code (src/site/chart.js) and the reports are inlined.
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "loadtest/src/parent/report/report.html"
CHART_JS = ROOT / "src/site/chart.js"


def main(argv):
    if len(argv) < 3 or any("=" not in a for a in argv[2:]):
        sys.exit(__doc__)
    runs = []
    for arg in argv[2:]:
        name, path = arg.split("=", 1)
        try:
            report = json.loads(pathlib.Path(path).read_text())
        except (OSError, ValueError) as e:
            sys.exit(f"report_html.py: {path}: {e}")
        runs.append({"name": name, "report": report})
    page = TEMPLATE.read_text()
    page = page.replace("/*HERALD_CHART_JS*/", CHART_JS.read_text(), 1)
    page = page.replace("/*HERALD_RUNS*/[]", json.dumps(runs, separators=(",", ":")).replace("</", "<\\/"), 1)
    pathlib.Path(argv[1]).write_text(page)


if __name__ == "__main__":
    main(sys.argv)
