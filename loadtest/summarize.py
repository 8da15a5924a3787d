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


def main() -> int:
    results, out, machine, command = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    tps = defaultdict(list)
    connect = defaultdict(list)
    idle = []
    for r in rows:
        if r["test"] == "pgbench":
            tps[(r["clients"], r["target"])].append(r["tps"])
        elif r["test"] == "connect":
            connect[r["target"]].append(r)
        elif r["test"] == "idle":
            idle.append(r)
    mean = statistics.mean
    clients = sorted({c for c, _ in tps})
    summary = {"machine": machine, "command": command, "pgbench": {}, "connect": {}, "idle": idle}
    md = [f"Machine: {machine}.", "", f"Command: `{command}`", ""]

    md += ["### pgbench -S (select-only), transactions per second", "",
           "| clients | direct TLS | devdb-proxy | PgBouncer (session) | proxy / direct | PgBouncer / direct |",
           "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    worst = None
    for c in clients:
        v = {t: mean(tps[(c, t)]) for t in TARGETS if tps[(c, t)]}
        summary["pgbench"][c] = v
        d = v.get("direct") or 0
        ratio = lambda t: v.get(t, 0) / d if d else 0
        worst = ratio("proxy") if worst is None else min(worst, ratio("proxy"))
        md.append(f"| {c} | {v.get('direct', 0):,.0f} | {v.get('proxy', 0):,.0f} | {v.get('pgbouncer', 0):,.0f} "
                  f"| {ratio('proxy'):.3f} | {ratio('pgbouncer'):.3f} |")

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
    added = c.get("proxy", {}).get("p50_ms", 0) - c.get("direct", {}).get("p50_ms", 0)

    md += ["", "### devdb-proxy memory with idle sessions", "",
           "| sessions | opened | errors | proxy RSS MiB | KiB per session |", "| ---: | ---: | ---: | ---: | ---: |"]
    for r in idle:
        md.append(f"| {r['sessions']} | {r['opened']} | {r['errors']} | {r['rss_mib']:.1f} | {r['kib_per_session']:.1f} |")
    per_session = max((r["kib_per_session"] for r in idle), default=0)

    ok = lambda b: "met" if b else "**missed**"
    bouncer_worst = min((summary["pgbench"][c].get("proxy", 0) >= summary["pgbench"][c].get("pgbouncer", 0)
                         for c in clients), default=False)
    md += ["", "### Targets", "",
           f"- proxy throughput ≥ 0.95 × direct: worst ratio {worst or 0:.3f}, {ok((worst or 0) >= 0.95)}",
           f"- proxy throughput ≥ PgBouncer at every client count: {ok(bouncer_worst)}",
           f"- added connect latency p50 ≤ 1 ms: {added:+.2f} ms, {ok(added <= 1.0)}",
           f"- ≤ 64 KiB per idle session: {per_session:.1f} KiB at most, {ok(0 < per_session <= 64)}", ""]
    summary["targets"] = {"worst_throughput_ratio": worst, "added_connect_p50_ms": added, "max_kib_per_session": per_session}

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text("\n".join(md))
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    data = out / "pgbench.dat"
    data.write_text("".join(f"{c} " + " ".join(f"{summary['pgbench'][c].get(t, 0):.0f}" for t in TARGETS) + "\n"
                            for c in clients))
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
plot "{data}" using 2:xtic(1) title "direct TLS", "" using 3 title "devdb-proxy", "" using 4 title "PgBouncer (session)"
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    data.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
