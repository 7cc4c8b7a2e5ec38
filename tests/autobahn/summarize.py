#!/usr/bin/env python3
"""Summarize an Autobahn fuzzingclient report: summarize.py REPORT_DIR [EXPECTED_IDS_FILE]

Prints "autobahn: OK=N NON-STRICT=N INFORMATIONAL=N UNIMPLEMENTED=N FAILED=N [MISSING=N]" and
one line per failed case. A case's verdict is Autobahn's "behavior"; anything other than the
first four buckets is FAILED. Expected ids absent from the report are MISSING and are included
in FAILED. Close-handshake anomalies ("behaviorClose") are only noted on stderr.
Each failed case is printed with what Autobahn expected, what it received and the tail of its
wire log, so that a failure seen once (say, in CI) can be understood afterwards.
Exit: 0 if FAILED=0, 1 otherwise, 3 if the report cannot be read.
"""
import collections, json, os, re, sys

BUCKETS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]


def key(cid):
    return [int(p) for p in cid.split(".")]


def reason(report_dir, e):
    why = "behavior=%s close=%s code=%s" % (e.get("behavior"), e.get("behaviorClose"), e.get("remoteCloseCode"))
    try:
        with open(os.path.join(report_dir, e["reportfile"])) as f:
            d = json.load(f)
    except (KeyError, OSError, ValueError):
        return why
    for text in dict.fromkeys([d.get("result"), d.get("resultClose")]):
        why += " | " + text if text else ""
    desc = " ".join(re.sub(r"<[^>]+>", "", d.get("description", "")).split())
    why += " | " + desc[:120] if desc else ""
    # What happened on the wire, so a failure seen once (say, in CI) can be understood later.
    why += "\n           expected=%.300s\n           received=%.300s" % (d.get("expected"), d.get("received"))
    why += "\n           wirelog(last 12)=%.900s" % (d.get("wirelog", [])[-12:],)
    return why


def main(report_dir, expected_file=None):
    try:
        with open(os.path.join(report_dir, "index.json")) as f:
            cases = next(iter(json.load(f).values()), {})
    except (OSError, ValueError) as e:
        print("autobahn: ERROR cannot read the report in %s: %s" % (report_dir, e))
        return 3
    counts = collections.Counter({b: 0 for b in BUCKETS})
    failed, odd_close = [], []
    for cid in sorted(cases, key=key):
        e = cases[cid]
        bucket = e.get("behavior") if e.get("behavior") in BUCKETS else "FAILED"
        counts[bucket] += 1
        if bucket == "FAILED":
            failed.append("  %-8s %s" % (cid, reason(report_dir, e)))
        if e.get("behaviorClose") not in ("OK", "INFORMATIONAL"):
            odd_close.append("%s=%s" % (cid, e.get("behaviorClose")))
    missing = []
    if expected_file:
        with open(expected_file) as f:
            missing = sorted({l.strip() for l in f if l.strip()} - set(cases), key=key)
    counts["FAILED"] += len(missing)
    print("autobahn: " + " ".join("%s=%d" % (b, counts[b]) for b in BUCKETS)
          + (" MISSING=%d" % len(missing) if missing else ""))
    for line in failed:
        print(line)
    if missing:  # wstest stops quietly once a connection is refused
        print("  missing: %s (absent from the report: server crashed or stopped accepting?)"
              % " ".join(missing[:20] + (["..."] if len(missing) > 20 else [])))
    if odd_close:
        print("autobahn: note: close-handshake anomalies (not counted): " + " ".join(odd_close),
              file=sys.stderr)
    return 1 if counts["FAILED"] else 0


if __name__ == "__main__":
    if not 2 <= len(sys.argv) <= 3:
        print(__doc__, file=sys.stderr)
        sys.exit(3)
    sys.exit(main(*sys.argv[1:]))
