# -*- coding: utf-8 -*-
# Copyright: dgxspark.sglang contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Draw busbw.svg from a verify report.json: bus bandwidth against message size.

    python busbw_svg.py REPORT_JSON OUT_SVG

Runs on the controller with the Python that runs ansible-playbook, and needs matplotlib (Agg backend,
no display). Log2 x axis in bytes with human tick labels, the busbw curve with markers (wrong sums
marked), log y axis (small and large messages differ by orders of magnitude), and the threshold as
a horizontal line: solid when it was applied, dashed and labelled "not applied (gloo)" otherwise.
The SVG is reproducible: no date in its metadata, fixed ids.
"""

from __future__ import annotations

import json
import sys


def human_bytes(n):
    """8 -> '8 B', 1024 -> '1 KiB', 3 * 2**20 -> '3 MiB'."""
    n = int(n)
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            value = n / size
            return ("%d %s" % (value, unit)) if value == int(value) else ("%.1f %s" % (value, unit))
    return "%d B" % n


def threshold_label(allreduce):
    gbps = float(allreduce.get("threshold_gbps") or 0)
    if allreduce.get("applicable") is False:
        return "threshold %g GB/s: not applicable (one node)" % gbps
    if allreduce.get("threshold_applied"):
        return "threshold %g GB/s (from %s)" % (gbps, human_bytes(allreduce.get("threshold_min_bytes") or 0))
    return "threshold %g GB/s: not applied (%s)" % (gbps, allreduce.get("backend") or "no run")


def draw(report, out_path):
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "dgxspark-verify"
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: searchable, small
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    allreduce = report.get("allreduce") or {}
    rows = sorted(allreduce.get("results") or [], key=lambda r: r["bytes"])
    threshold = float(allreduce.get("threshold_gbps") or 0)
    applied = bool(allreduce.get("threshold_applied"))

    fig, ax = plt.subplots(figsize=(9, 5.2), dpi=100)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    if rows:
        xs = [r["bytes"] for r in rows]
        ys = [max(float(r["busbw_gbps"]), 1e-6) for r in rows]
        ax.plot(xs, ys, marker="o", markersize=4, linewidth=1.6, color="#1f6fb4", label="bus bandwidth (rank 0)",
                gid="busbw-curve")
        bad = [(x, y) for x, y, r in zip(xs, ys, rows) if not r.get("correct")]
        if bad:
            ax.plot([b[0] for b in bad], [b[1] for b in bad], linestyle="none", marker="x", markersize=9,
                    color="#c0392b", label="wrong sum", gid="wrong-sums")
        ticks = [x for i, x in enumerate(xs) if i % max(1, len(xs) // 12) == 0 or x == xs[-1]]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(ticks, [human_bytes(t) for t in ticks], rotation=45, ha="right")
        ax.set_xlim(xs[0] / 1.3, xs[-1] * 1.3)
        peak = max(rows, key=lambda r: r["busbw_gbps"])
        ax.annotate("peak %.3g GB/s" % peak["busbw_gbps"], (peak["bytes"], max(peak["busbw_gbps"], 1e-6)),
                    textcoords="offset points", xytext=(-10, 8), ha="right", fontsize=9)
    else:
        blockers = [b.get("reason", "") if isinstance(b, dict) else str(b) for b in allreduce.get("blockers") or []]
        reason = allreduce.get("error") or "; ".join(blockers) or "no result"
        ax.text(0.5, 0.5, "all-reduce not run or failed:\n%s" % reason[:200], transform=ax.transAxes, ha="center",
                va="center", fontsize=10, color="#c0392b", wrap=True)
        ax.set_xlim(8, 1 << 30)
    if threshold > 0:
        ax.axhline(threshold, color="#c0392b" if applied else "#7f7f7f", linestyle="-" if applied else "--",
                   linewidth=1.4, label="threshold", gid="threshold")
        ax.annotate(threshold_label(allreduce), xy=(0.01, threshold), xycoords=("axes fraction", "data"),
                    textcoords="offset points", xytext=(2, 4), fontsize=9,
                    color="#c0392b" if applied else "#555555")
        low, high = ax.get_ylim()
        ax.set_ylim(min(low, threshold / 3), max(high, threshold * 2))
    ax.set_xlabel("message size (bytes, log scale)")
    ax.set_ylabel("bus bandwidth (GB/s, log scale)")
    title = "%s: all-reduce over %s node(s)" % (report.get("cluster"), report.get("nnodes"))
    details = [allreduce.get("backend"), allreduce.get("device_name"), report.get("timestamp")]
    ax.set_title("%s\n%s" % (title, ", ".join(str(d) for d in details if d)), fontsize=11)
    ax.grid(True, which="major", alpha=0.35)
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_path, format="svg", metadata={"Date": None})
    plt.close(fig)


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: busbw_svg.py REPORT_JSON OUT_SVG\n")
        return 2
    with open(argv[1]) as fh:
        report = json.load(fh)
    try:
        draw(report, argv[2])
    except ImportError as exc:
        sys.stderr.write("busbw_svg.py: matplotlib is missing on the controller (%s): pip install matplotlib\n" % exc)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
