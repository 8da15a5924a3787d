#!/usr/bin/env python3
"""Summarizes a bench.sh run: results.jsonl -> results.md (ratios to direct TLS, targets met or
not), results.json, and bench.png (gnuplot). Usage: summarize.py RESULTS.jsonl OUT_DIR MACHINE COMMAND"""
import json
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

TARGETS = ["direct", "proxy", "pgbouncer"]
PGBENCH_TARGETS = ["direct", "proxy", "pgbouncer", "relay"]


def main() -> int:
    results, out, machine, command = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    tps = defaultdict(list)
    latency = defaultdict(list)
    cpu = defaultdict(list)
    connect = defaultdict(list)
    idle = []
    for r in rows:
        if r["test"] == "pgbench":
            tps[(r["clients"], r["target"])].append(r["tps"])
            latency[(r["clients"], r["target"])].append(r.get("latency_ms", 0))
            cpu[(r["clients"], r["target"])].append(r.get("cpu_us_per_txn", 0))
        elif r["test"] == "connect":
            connect[r["target"]].append(r)
        elif r["test"] == "idle":
            idle.append(r)
    mean = statistics.mean
    clients = sorted({c for c, _ in tps})
    summary = {"machine": machine, "command": command, "pgbench": {}, "connect": {}, "idle": idle}
    md = [f"Machine: {machine}.", "", f"Command: `{command}`", ""]

    md += ["### pgbench -S (select-only) over TLS: transactions per second (mean of the rounds)", "",
           "The relay is socat copying bytes with TLS end to end between pgbench and PostgreSQL: no TLS work",
           "in the middle, so it is the floor for any extra process on these cores.", "",
           "| clients | direct TLS | devdb-proxy | PgBouncer (session) | relay (no TLS work) | proxy / direct "
           "| proxy / PgBouncer | proxy / relay |",
           "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    worst = None
    for c in clients:
        v = {t: mean(tps[(c, t)]) for t in PGBENCH_TARGETS if tps[(c, t)]}
        summary["pgbench"][c] = {"tps": v}
        ratio = lambda a, b: v.get(a, 0) / v[b] if v.get(b) else 0
        worst = ratio("proxy", "direct") if worst is None else min(worst, ratio("proxy", "direct"))
        md.append(f"| {c} | {v.get('direct', 0):,.0f} | {v.get('proxy', 0):,.0f} | {v.get('pgbouncer', 0):,.0f} "
                  f"| {v.get('relay', 0):,.0f} | {ratio('proxy', 'direct'):.3f} | {ratio('proxy', 'pgbouncer'):.3f} "
                  f"| {ratio('proxy', 'relay'):.3f} |")

    md += ["", "### CPU time of the process in the middle, µs per transaction (from /proc/<pid>/stat over each run)", "",
           "| clients | devdb-proxy | PgBouncer (session) | relay | proxy / PgBouncer |",
           "| ---: | ---: | ---: | ---: | ---: |"]
    for c in clients:
        v = {t: mean(cpu[(c, t)]) for t in ("proxy", "pgbouncer", "relay") if cpu[(c, t)]}
        summary["pgbench"][c]["cpu_us_per_txn"] = v
        md.append(f"| {c} | {v.get('proxy', 0):.1f} | {v.get('pgbouncer', 0):.1f} | {v.get('relay', 0):.1f} "
                  f"| {v.get('proxy', 0) / v['pgbouncer'] if v.get('pgbouncer') else 0:.3f} |")

    first = clients[0] if clients else None
    added = {}
    if first is not None:
        lat = {t: mean(latency[(first, t)]) for t in PGBENCH_TARGETS if latency[(first, t)]}
        added = {t: (lat[t] - lat.get("direct", 0)) * 1000 for t in lat if t != "direct"}
        summary["pgbench"][first]["added_latency_us"] = added
        md += ["", f"### Round-trip latency at {first} client (pgbench's average), µs added over direct TLS", "",
               "| devdb-proxy | PgBouncer (session) | relay |", "| ---: | ---: | ---: |",
               f"| {added.get('proxy', 0):+.1f} | {added.get('pgbouncer', 0):+.1f} | {added.get('relay', 0):+.1f} |"]

    if connect:
        md += ["", "### Connection setup (TLS + SCRAM + `SELECT 1` + close), 4 clients", "",
               "| target | connections/s | connect p50 ms | connect p99 ms | errors | rate / direct |",
               "| --- | ---: | ---: | ---: | ---: | ---: |"]
    c = {t: {k: mean(r[k] for r in connect[t]) for k in ("per_second", "p50_ms", "p99_ms")} | {"errors": sum(r["errors"] for r in connect[t])}
         for t in TARGETS if connect[t]}
    summary["connect"] = c
    direct_rate = c.get("direct", {}).get("per_second") or 0
    for t, v in c.items():
        md.append(f"| {t} | {v['per_second']:,.0f} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {v['errors']} "
                  f"| {v['per_second'] / direct_rate if direct_rate else 0:.3f} |")
    added_connect = c.get("proxy", {}).get("p50_ms", 0) - c.get("direct", {}).get("p50_ms", 0)

    if idle:
        md += ["", "### devdb-proxy memory with idle sessions", "",
               "| sessions | opened | errors | proxy RSS MiB | KiB per session |", "| ---: | ---: | ---: | ---: | ---: |"]
    for r in idle:
        md.append(f"| {r['sessions']} | {r['opened']} | {r['errors']} | {r['rss_mib']:.1f} | {r['kib_per_session']:.1f} |")
    per_session = max((r["kib_per_session"] for r in idle), default=0)

    ok = lambda b: "met" if b else "**missed**"
    pg = summary["pgbench"]
    clients = [c for c in clients if "cpu_us_per_txn" in pg[c]]
    ahead = all(pg[c]["tps"].get("proxy", 0) > pg[c]["tps"].get("pgbouncer", 0) for c in clients)
    near_floor = min((pg[c]["tps"].get("proxy", 0) / pg[c]["tps"]["relay"] for c in clients
                      if pg[c]["tps"].get("relay")), default=0)
    cpu_ok = all(pg[c]["cpu_us_per_txn"].get("proxy", 0) <= pg[c]["cpu_us_per_txn"].get("pgbouncer", 0) for c in clients)
    md += ["", "### Targets", ""]
    if clients:
        md += [f"- proxy CPU per transaction ≤ PgBouncer's at every client count: {ok(cpu_ok)}",
               f"- proxy throughput ahead of PgBouncer at every client count: {ok(ahead)}",
               f"- proxy throughput within 5 % of the relay at every client count: worst {near_floor:.3f}, "
               f"{ok(near_floor >= 0.95)}"]
    if connect:
        md.append(f"- added connect latency p50 ≤ 1 ms: {added_connect:+.2f} ms, {ok(added_connect <= 1.0)}")
    if idle:
        md.append(f"- ≤ 64 KiB per idle session: {per_session:.1f} KiB at most, {ok(0 < per_session <= 64)}")
    md.append("")
    summary["targets"] = {"worst_throughput_ratio": worst, "worst_proxy_over_relay": near_floor,
                          "cpu_at_most_pgbouncer": cpu_ok, "ahead_of_pgbouncer": ahead}

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text("\n".join(md))
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    data = out / "pgbench.dat"
    data.write_text("".join(f"{c} " + " ".join(f"{summary['pgbench'][c]['tps'].get(t, 0):.0f}" for t in PGBENCH_TARGETS)
                            + "\n" for c in clients))
    script = f"""
set terminal pngcairo size 900,500 font ",11"
set output "{out / 'bench.png'}"
set title "pgbench -S through TLS: transactions per second (higher is better)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set key top left
set xlabel "clients"
set ylabel "tps"
set yrange [0:*]
set grid ytics
plot "{data}" using 2:xtic(1) title "direct TLS", "" using 3 title "devdb-proxy", "" using 4 title "PgBouncer (session)", "" using 5 title "relay (no TLS work)"
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    data.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
