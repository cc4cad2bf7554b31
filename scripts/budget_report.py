#!/usr/bin/env python3
"""Reads the JSON reports scripts/budget.sh wrote (NAME-RUN.json), prints the median of each
figure against the budget as a Markdown table, and draws deliveries/s and p99 latency against
the number of connections as an SVG (no plotting library needed).

Usage: scripts/budget_report.py DIR CHART.svg
"""
import glob
import json
import os
import statistics
import sys
from collections import defaultdict


def load(directory):
    runs = defaultdict(list)
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        name = os.path.basename(path)[: -len(".json")].rsplit("-", 1)[0]
        with open(path) as f:
            runs[name].append(json.load(f))
    return runs


def pick(report, dotted):
    v = report
    for k in dotted.split("."):
        v = v[k]
    return v


def median(runs, name, dotted):
    values = [pick(r, dotted) for r in runs.get(name, [])]
    values = [v for v in values if v is not None]
    return (statistics.median(values), min(values), max(values), len(values)) if values else None


BUDGET = [
    # (what, run name, field, budget, "<=" or ">=", unit)
    ("idle memory at 15k connections", "idle-15000", "server.kib_per_conn_idle", 6, "<=", "KiB/conn"),
    ("memory after a 200-message burst to 15k", "broadcast-15000", "server.kib_per_conn_after", 12, "<=", "KiB/conn"),
    ("broadcast burst to 10k: deliveries/s", "broadcast-10000", "deliveries.per_second", 1_000_000, ">=", "/s"),
    ("broadcast burst to 10k: lost", "broadcast-10000", "deliveries.lost", 0, "<=", ""),
    ("broadcast burst to 10k: server CPU per delivery", "broadcast-10000", "server.cpu_us_per_delivery", 1.5, "<=", "us"),
    ("SendToUser 1000/s to 10k: p99", "user-10000", "latency_ms.p99", 2, "<=", "ms"),
    ("10k new HS256 connections: rate", "broadcast-10000", "connect.per_second", 15_000, ">=", "/s"),
]


def fmt(v):
    if isinstance(v, float) and v >= 1000:
        return f"{v:,.0f}"
    if isinstance(v, float):
        return f"{v:.3g}"
    return f"{v:,}"


def table(runs):
    lines = [
        "| figure | budget | median | min..max | runs | |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for what, name, field, budget, op, unit in BUDGET:
        m = median(runs, name, field)
        if m is None:
            lines.append(f"| {what} | {op} {fmt(budget)} {unit} | (not measured) | | 0 | |")
            continue
        med, lo, hi, n = m
        ok = med <= budget if op == "<=" else med >= budget
        lines.append(
            f"| {what} | {op} {fmt(budget)} {unit} | **{fmt(med)}** {unit} | {fmt(lo)}..{fmt(hi)} | {n} | {'met' if ok else 'missed'} |"
        )
    return "\n".join(lines)


def panel(x0, title, points, unit, color):
    """One chart panel 380x260 at x0: points are (conns, median, lo, hi)."""
    w, h, left, top, bottom = 380, 260, 60, 30, 40
    pw, ph = w - left - 20, h - top - bottom
    ymax = max(p[3] for p in points) * 1.15 or 1
    xs = [p[0] for p in points]
    xmax = max(xs)

    def px(c):
        return x0 + left + pw * c / xmax

    def py(v):
        return top + ph - ph * v / ymax

    out = [f'<text x="{x0 + w / 2}" y="18" text-anchor="middle" font-weight="bold">{title}</text>']
    out.append(f'<line x1="{x0 + left}" y1="{top + ph}" x2="{x0 + left + pw}" y2="{top + ph}" stroke="#333"/>')
    out.append(f'<line x1="{x0 + left}" y1="{top}" x2="{x0 + left}" y2="{top + ph}" stroke="#333"/>')
    for i in range(5):
        v = ymax * i / 4
        label = f"{v / 1e6:.1f}M" if ymax > 1e5 else f"{v:.2f}"
        out.append(f'<text x="{x0 + left - 6}" y="{py(v) + 4}" text-anchor="end">{label}</text>')
        out.append(f'<line x1="{x0 + left}" y1="{py(v)}" x2="{x0 + left + pw}" y2="{py(v)}" stroke="#ddd"/>')
    for c in xs:
        out.append(f'<text x="{px(c)}" y="{top + ph + 16}" text-anchor="middle">{c // 1000}k</text>')
    out.append(f'<text x="{x0 + left + pw / 2}" y="{h - 4}" text-anchor="middle">connections ({unit})</text>')
    path = " ".join(f"{'M' if i == 0 else 'L'}{px(c)},{py(m)}" for i, (c, m, _, _) in enumerate(points))
    out.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
    for c, m, lo, hi in points:
        out.append(f'<line x1="{px(c)}" y1="{py(lo)}" x2="{px(c)}" y2="{py(hi)}" stroke="{color}"/>')
        out.append(f'<circle cx="{px(c)}" cy="{py(m)}" r="3.5" fill="{color}"/>')
    return out


def chart(runs, path):
    def series(prefix, field):
        pts = []
        for n in (1000, 5000, 10000, 15000):
            m = median(runs, f"{prefix}-{n}", field)
            if m:
                pts.append((n, m[0], m[1], m[2]))
        return pts

    deliveries = series("broadcast", "deliveries.per_second")
    p99 = series("user", "latency_ms.p99")
    if not deliveries or not p99:
        print("chart: not enough runs to draw", file=sys.stderr)
        return
    body = panel(0, "Broadcast burst: deliveries/s", deliveries, "200 calls back to back", "#1f77b4")
    body += panel(390, "SendToUser 1000/s: p99 latency (ms)", p99, "end to end", "#d62728")
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="780" height="270" '
        'font-family="sans-serif" font-size="11">\n'
        '<rect width="100%" height="100%" fill="white"/>\n'
        + "\n".join(body)
        + '\n<text x="775" y="266" text-anchor="end" fill="#666" font-size="9">median of runs, bars: min..max</text>\n</svg>\n'
    )
    with open(path, "w") as f:
        f.write(svg)
    print(f"wrote {path}", file=sys.stderr)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    runs = load(sys.argv[1])
    if not runs:
        sys.exit(f"no reports in {sys.argv[1]}")
    print(table(runs))
    print()
    for prefix, field, unit in (
        ("broadcast", "deliveries.per_second", "deliveries/s"),
        ("broadcast", "server.cpu_us_per_delivery", "us server CPU per delivery"),
        ("broadcast", "latency_ms.p99", "ms p99 (burst)"),
        ("user", "latency_ms.p99", "ms p99 (SendToUser 1000/s)"),
        ("user", "latency_ms.p50", "ms p50 (SendToUser 1000/s)"),
    ):
        cells = []
        for n in (1000, 5000, 10000, 15000):
            m = median(runs, f"{prefix}-{n}", field)
            cells.append(fmt(m[0]) if m else "-")
        print(f"| {prefix} {unit} | " + " | ".join(cells) + " |")
    chart(runs, sys.argv[2])


if __name__ == "__main__":
    main()
