#!/usr/bin/env python3
"""Reads what scripts/cluster_budget.sh wrote (NAME-TOPOLOGY-RUN.json and the Redis figures of
the cluster runs) and prints the medians, single node beside the cluster, against the budget
as a Markdown table.

Usage: scripts/cluster_report.py DIR
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
        base = os.path.basename(path)[: -len(".json")]
        name, run = base.rsplit("-", 1)
        with open(path) as f:
            report = json.load(f)
        extra = {}
        for what in ("redis-mem", "redis-cmds", "redis-cpu"):
            try:
                with open(os.path.join(directory, f"{base}.{what}-before")) as f:
                    before = float(f.read().strip())
                with open(os.path.join(directory, f"{base}.{what}-after")) as f:
                    after = float(f.read().strip())
                # Redis CPU is per publication (microseconds), the rest per connection.
                if what == "redis-cpu":
                    extra[what] = (after - before) * 1e6 / max(report["messages"], 1)
                else:
                    extra[what] = (after - before) / max(report["conns"], 1)
            except (OSError, ValueError):
                pass
        try:
            with open(os.path.join(directory, f"{base}.redis-evalsha-usec")) as f:
                extra["redis-evalsha-usec"] = float(f.read().strip())
        except (OSError, ValueError):
            pass
        report["redis"] = extra
        runs[name].append(report)
    return runs


def pick(report, dotted):
    v = report
    for k in dotted.split("."):
        v = v.get(k) if isinstance(v, dict) else None
        if v is None:
            return None
    return v


def med(runs, name, dotted):
    vals = [pick(r, dotted) for r in runs.get(name, [])]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float) and abs(v) >= 1000:
        return f"{v:,.0f}"
    if isinstance(v, float):
        return f"{v:.3g}"
    return f"{v:,}"


ROWS = [
    # (figure, name, field, rule) rule: ("ratio", min) or ("ratio_max", max) against single,
    # ("max", limit) or ("min", floor) on the cluster's figure
    ("broadcast burst to 10k, 8 in flight: deliveries/s", "broadcast", "deliveries.per_second", ("ratio", 0.9)),
    ("broadcast burst to 10k, 8 in flight: lost", "broadcast", "deliveries.lost", ("max", 0)),
    ("broadcast burst to 10k, 32 in flight: deliveries/s", "broadcast32", "deliveries.per_second", None),
    ("broadcast to 10k, 1 in flight: deliveries/s", "broadcast1", "deliveries.per_second", None),
    ("Publish to one topic of 10k subscribers, 8 in flight: deliveries/s", "fanout", "deliveries.per_second", ("ratio", 0.9)),
    ("Publish to one topic of 10k subscribers, 32 in flight: deliveries/s", "fanout32", "deliveries.per_second", None),
    ("Publish to 1,000 topics, 8 callers: publishes/s", "publish", "calls.per_second", ("ratio", 0.8)),
    ("Publish to 1,000 topics, 8 callers: p99 call ms", "publish", "calls.latency_ms.p99", ("max", 5)),
    ("PublishStream to 1,000 topics, one client: publications/s", "stream", "deliveries.per_second", ("min", 40000)),
    ("PublishStream: Redis CPU per publication, us", "stream", "redis.redis-cpu", None),
    ("PublishStream: Redis usec per EVALSHA (commandstats)", "stream", "redis.redis-evalsha-usec", None),
    ("server CPU per delivery, broadcast 8 in flight: us", "broadcast", "server.cpu_us_per_delivery", ("ratio_max", 1.3)),
    ("SendToUser 1000/s, 10k conns (cluster: through the other node): p99 ms", "user", "latency_ms.p99", ("max", 1)),
    ("10k new connections of distinct users: connections/s", "connect", "connect.per_second", ("ratio", 0.6)),
    ("idle memory (both nodes): KiB per connection", "connect", "server.kib_per_conn_idle", None),
    ("Redis memory per idle connection: bytes", "connect", "redis.redis-mem", None),
    ("Redis commands per connection (connect + 2 s idle)", "connect", "redis.redis-cmds", None),
]


def main():
    runs = load(sys.argv[1])
    n = max((len(v) for v in runs.values()), default=0)
    print(f"Medians of {n} runs.\n")
    print("| figure | single node | two nodes + Redis | ratio | budget | met |")
    print("| --- | --- | --- | --- | --- | --- |")
    for figure, name, field, rule in ROWS:
        single = med(runs, f"{name}-single", field)
        cluster = med(runs, f"{name}-cluster", field)
        if cluster is None:
            cluster = med(runs, f"{name}-cluster-other", field)
        ratio = cluster / single if single and cluster is not None else None
        if rule is None:
            budget, met = "reported", ""
        elif rule[0] == "ratio":
            budget, met = f">= {rule[1]}x single", "yes" if ratio is not None and ratio >= rule[1] else "NO"
        elif rule[0] == "ratio_max":
            budget, met = f"<= {rule[1]}x single", "yes" if ratio is not None and ratio <= rule[1] else "NO"
        elif rule[0] == "min":
            budget, met = f">= {rule[1]:,}", "yes" if cluster is not None and cluster >= rule[1] else "NO"
        else:
            budget, met = f"<= {rule[1]}", "yes" if cluster is not None and cluster <= rule[1] else "NO"
        print(f"| {figure} | {fmt(single)} | {fmt(cluster)} | {fmt(ratio)} | {budget} | {met} |")
    stream = med(runs, "stream-single", "deliveries.per_second")
    unary = med(runs, "publish-single", "calls.per_second")
    if stream and unary:
        ratio = stream / unary
        print(f"| one node: PublishStream publications/s over unary Publish calls/s | {fmt(unary)} (unary) | {fmt(stream)} (stream) | {fmt(ratio)} | >= 4x | {'yes' if ratio >= 4 else 'NO'} |")


if __name__ == "__main__":
    main()
