#!/usr/bin/env python3
"""Judge a benches/soak.sh run and draw its samples.

  python3 benches/soak_report.py OUT_DIR [--warmup SECONDS]

Reads OUT_DIR/samples.csv, loadtest.json and churn.json; prints a markdown table; writes
OUT_DIR/samples.png (needs matplotlib; skipped with a note when it is missing). Exit 0 when:
  - the loadtest's steady subscribers lost, duplicated and reordered nothing;
  - every herald.v1 resubscribe with `since` was exact (the churn reported no error);
  - after the warm-up, herald's RSS, open fds and the kernel's TCP memory are flat: the slope
    of a least-squares line through the samples stays under the allowance below.

Allowances, per minute of soak, and why:
  RSS      512 KiB/min. The churn opens ~200 connections/s, 12,000 a minute: a leak of one
           small allocation per connection (48 bytes and up) shows as more than this; the
           allocator's own drift, and the history filling to its cap, stay well under it.
  fds      1 %/min of the mean (at least 5/min). The open count swings with churn (each client lives 0.5-5 s),
           but a leak of one fd per thousand connections (12/min) would show.
  TCP mem  2 %/min of the mean (at least 256 pages, 1 MiB, a minute). System-wide (other processes share it) and bursty; a few
           orphaned sockets per minute, each holding up to 4 MiB, would show.
"""

import argparse
import csv
import json
import os
import sys


def slope(xs, ys):
    """Least-squares slope dy/dx."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--warmup", type=float, default=120)
    a = p.parse_args()

    with open(os.path.join(a.out, "samples.csv")) as f:
        rows = [{k: float(v or 0) for k, v in r.items()} for r in csv.DictReader(f)]
    with open(os.path.join(a.out, "loadtest.json")) as f:
        lt = json.load(f)
    with open(os.path.join(a.out, "churn.json")) as f:
        churn = json.load(f)

    # The loads end before sampling does (drain, shutdown): judge the window they ran in.
    end = churn["duration_s"]
    steady = [r for r in rows if a.warmup <= r["t_s"] <= end]
    t_min = [r["t_s"] / 60 for r in steady]
    checks = []

    def flat(name, key, allowance, unit):
        ys = [r[key] for r in steady]
        s = slope(t_min, ys)
        mean = sum(ys) / len(ys) if ys else 0
        ok = abs(s) <= allowance
        checks.append((name, ok, f"slope {s:+.1f} {unit}/min (allowed ±{allowance:.1f}), "
                       f"mean {mean:.0f}, min {min(ys):.0f}, max {max(ys):.0f}"))

    if len(steady) < 3:
        checks.append(("samples after warm-up", False, f"{len(steady)} samples"))
    else:
        flat("herald RSS (KiB)", "rss_kib", 512, "KiB")
        fds = [r["fds"] for r in steady]
        flat("herald open fds", "fds", max(0.01 * sum(fds) / len(fds), 5), "fds")
        mem = [r["tcp_mem_pages"] for r in steady]
        flat("kernel TCP mem (pages)", "tcp_mem_pages", max(0.02 * sum(mem) / len(mem), 256), "pages")

    lost = lt["lost"] + lt["duplicates"] + lt["out_of_order"] + lt["unexpected"]
    checks.append(("steady subscribers", lost == 0 and lt["delivered"] > 0,
                   f"{lt['subscribers']} subscribers, delivered {lt['delivered']} of "
                   f"{lt['expected']}, lost {lt['lost']}, duplicates {lt['duplicates']}, "
                   f"out of order {lt['out_of_order']}, unexpected {lt['unexpected']}"))
    checks.append(("resubscribes with since", not churn["errors"] and churn["exact_resubscribes"] > 0,
                   f"{churn['resubscribes_with_since']} resubscribed, "
                   f"{churn['exact_resubscribes']} sessions exact to the end, "
                   f"errors {len(churn['errors'])}, refusals {churn['refusals']}"))
    last = rows[-1] if rows else {}
    clients = sum(churn["clients"].values())

    print(f"| check | result | detail |\n| --- | --- | --- |")
    for name, ok, detail in checks:
        print(f"| {name} | {'pass' if ok else 'FAIL'} | {detail} |")
    print()
    print(f"churn: {clients} clients in {churn['duration_s']} s ({churn['clients']}), "
          f"failures {churn['client_failures']}, HTTP publishes {churn['http_published']}, "
          f"burst messages {churn['burst_messages']}; herald at the last sample: "
          f"slow_closes {last.get('slow_closes', 0):.0f}, aborts {last.get('aborts', 0):.0f}, "
          f"full_drops {last.get('full_drops', 0):.0f}")

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no samples.png)")
    else:
        t = [r["t_s"] / 60 for r in rows]
        fig, axes = plt.subplots(4, 1, figsize=(8, 9), sharex=True)
        series = [
            ("herald RSS (MiB)", [r["rss_kib"] / 1024 for r in rows]),
            ("herald open fds", [r["fds"] for r in rows]),
            ("kernel TCP mem (MiB, system-wide)", [r["tcp_mem_pages"] * 4 / 1024 for r in rows]),
            ("slow closes / aborts (cumulative)", None),
        ]
        for ax, (label, ys) in zip(axes, series):
            if ys is None:
                ax.plot(t, [r["slow_closes"] for r in rows], label="slow_closes")
                ax.plot(t, [r["aborts"] for r in rows], label="aborts")
                ax.legend(loc="upper left")
            else:
                ax.plot(t, ys)
            ax.axvline(a.warmup / 60, color="grey", linestyle=":")
            ax.set_ylabel(label, fontsize=8)
            ax.grid(alpha=0.3)
        axes[-1].set_xlabel("minutes (dotted: end of warm-up)")
        fig.suptitle("benches/soak.sh samples")
        fig.tight_layout()
        fig.savefig(os.path.join(a.out, "samples.png"), dpi=80)
        print(f"wrote {os.path.join(a.out, 'samples.png')}")

    sys.exit(0 if all(ok for _, ok, _ in checks) else 1)


if __name__ == "__main__":
    main()
