#!/usr/bin/env python3
"""The client side of loadtest/kube-scale.sh: populate (projects and databases through the API,
half of them stopped), steady (activity reports and a route subscription for a while), takeover
(how long a new leader takes), summary (the figures as JSON)."""

import json
import random
import statistics
import sys
import threading
import time
import urllib.request
import ssl
from concurrent.futures import ThreadPoolExecutor

from api_client import call, create_ready_projects, wait_for


def populate(base, token, projects, per):
    names = [f"p{p:02d}" for p in range(projects)]
    print(f"projects ready in {create_ready_projects(base, token, names, 1800):.0f} s", file=sys.stderr)
    databases = [(f"{p}-db{d:03d}", p) for p in names for d in range(per)]
    started = time.time()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda d: call(base, token, "POST", "/v1/databases", {"name": d[0], "project": d[1], "owner": f"o{d[1]}"}, timeout=600), databases))
    print(f"{len(databases)} creates answered in {time.time() - started:.0f} s", file=sys.stderr)

    def count(status):
        listed = call(base, token, "GET", "/v1/databases")
        return sum(1 for d in listed if d["status"] == status), len(listed)

    def all_running():
        running, total = count("running")
        return running == len(databases), f"{running} of {total} running"

    print(f"all running in {wait_for('databases', all_running, 1800):.0f} s", file=sys.stderr)
    stopped = [name for i, (name, _) in enumerate(databases) if i % 2 == 1]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: call(base, token, "POST", f"/v1/databases/{n}/stop"), stopped))

    def half_stopped():
        n, total = count("stopped")
        return n == len(stopped), f"{n} of {total} stopped"

    print(f"half stopped in {wait_for('stops', half_stopped, 1800):.0f} s", file=sys.stderr)


def steady(bases, token, seconds, out):
    """Two proxies report sessions on every running database (half each), each report to either
    controller replica as the Service would send it; every minute an owner stops one running
    database and starts an asleep one (the churn route changes come from); a route subscription
    follows the changes as proxies do (?changes=true)."""
    bases = bases.split(",")
    base = bases[0]
    listed = call(base, token, "GET", "/v1/databases")
    running = [d["name"] for d in listed if d["status"] == "running"]
    asleep = [d["name"] for d in listed if d["status"] == "stopped"]
    route = {"table_bytes": 0, "changes": 0, "change_bytes": 0, "heartbeats": 0, "routes_changed": 0}
    stop = threading.Event()

    def follow():
        request = urllib.request.Request(base + "/v1/routes/watch?changes=true")
        request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=seconds + 60) as stream:
            while not stop.is_set():
                line = stream.readline()
                if not line:
                    return
                update = json.loads(line)
                if "routes" in update:
                    route["table_bytes"] = len(line)
                elif update.get("changed") or update.get("removed"):
                    route["changes"] += 1
                    route["change_bytes"] += len(line)
                    route["routes_changed"] += len(update.get("changed", [])) + len(update.get("removed", []))
                else:
                    route["heartbeats"] += 1

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    time.sleep(2)
    reports, failures, churned = 0, [], 0
    list_latency, report_latency = [], []
    started = time.time()
    next_churn = started + 60
    while time.time() - started < seconds:
        for proxy, share in (("proxy-a", running[0::2]), ("proxy-b", running[1::2])):
            try:
                t = time.time()
                # A proxy gives up on a report after 10 s.
                call(random.choice(bases), token, "POST", "/v1/activity",
                     {"replica": proxy, "open": share, "active": share}, timeout=10)
                report_latency.append(time.time() - t)
                reports += 1
            except Exception as error:  # noqa: BLE001 - a figure, not a crash
                failures.append(f"{time.time() - started:.0f}s: report: {error}")
        if time.time() >= next_churn and asleep:
            next_churn += 60
            try:
                woken, slept = asleep.pop(0), running.pop(0)
                call(base, token, "POST", f"/v1/databases/{slept}/stop")
                call(base, token, "POST", f"/v1/databases/{woken}/start")
                running.append(woken)
                asleep.append(slept)
                churned += 1
            except Exception as error:  # noqa: BLE001
                failures.append(f"{time.time() - started:.0f}s: churn: {error}")
        try:
            t = time.time()
            call(base, token, "GET", "/v1/databases", timeout=120)
            list_latency.append(time.time() - t)
        except Exception as error:  # noqa: BLE001
            failures.append(f"{time.time() - started:.0f}s: list: {error}")
        stop.wait(15)
    stop.set()
    json.dump({
        "seconds": time.time() - started, "activity_reports": reports, "churned": churned,
        "routes": route, "list_seconds": list_latency, "report_seconds": report_latency, "failures": failures,
    }, open(out, "w"))


def takeover(log, api, ca, killed, out):
    killed = float(killed)
    context = ssl.create_default_context(cafile=ca)

    def counters():
        with urllib.request.urlopen(api + "/_counters", context=context) as answer:
            return json.load(answer)

    lead = None
    start = time.time()
    while time.time() - start < 300:
        if "leading" in open(log).read():
            lead = time.time() - killed
            break
        time.sleep(0.2)
    if lead is None:
        raise SystemExit("the second replica never led")
    # Settled: five seconds in a row with at most 3 requests a second (what steady state is).
    window, last = [], counters()["requests_total"]
    while time.time() - start < 900:
        time.sleep(1)
        now = counters()["requests_total"]
        window = (window + [now - last])[-5:]
        last = now
        if len(window) == 5 and max(window) <= 3:
            break
    settled = time.time() - killed - 5
    json.dump({"leads_after_seconds": round(lead, 1), "settled_after_seconds": round(settled, 1),
               "requests": counters()}, open(out, "w"))


def summary(work, projects, per, seconds):
    counters = json.load(open(f"{work}/counters-steady.json"))
    steady = json.load(open(f"{work}/steady.json"))
    takeover = json.load(open(f"{work}/takeover.json"))

    def spread(values):
        return {"p50": round(statistics.median(values), 3) if values else None,
                "max": round(max(values), 3) if values else None}

    def ticks(name):
        values = [float(x) for x in open(f"{work}/{name}").read().split()]
        return {**spread(values), "ticks": len(values)}

    span = counters["seconds"]
    by_request = dict(sorted(counters["requests"].items(), key=lambda kv: -kv[1]))
    status_writes = sum(v for k, v in counters["requests"].items() if k.startswith("patch databases"))
    # The counters are zeroed after populate, so the leader change's own figures follow.
    result = {
        "databases": projects * per, "running": projects * per // 2, "projects": projects,
        "steady": {
            "seconds": round(span),
            "requests_per_second": round(counters["requests_total"] / span, 2),
            "bytes_written_per_second": round(counters["bytes_written"] / span),
            "objects_written": counters["objects_written"],
            "by_request": {k: round(v / span, 3) for k, v in by_request.items()},
            "watch_events_sent": counters["watch_events_sent"],
        },
        "monitor_tick_seconds": ticks("ticks.txt"),
        "monitor_tick_seconds_while_populating": ticks("ticks-populate.txt"),
        "routes": {**steady["routes"],
                   "bytes_per_change": steady["routes"]["change_bytes"] // max(steady["routes"]["changes"], 1),
                   "database_writes": status_writes, "databases_stopped_and_started": steady["churned"]},
        "api_list_seconds": spread(steady["list_seconds"]),
        "activity_report_seconds": spread(steady["report_seconds"]),
        "failures": steady["failures"],
        "leader_change": {"leads_after_seconds": takeover["leads_after_seconds"],
                          "settled_after_seconds": takeover["settled_after_seconds"],
                          "requests": takeover["requests"]["requests_total"]},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "populate":
        populate(args[0], args[1], int(args[2]), int(args[3]))
    elif command == "steady":
        steady(args[0], args[1], float(args[2]), args[3])
    elif command == "takeover":
        takeover(*args)
    elif command == "summary":
        summary(args[0], int(args[1]), int(args[2]), float(args[3]))
    else:
        raise SystemExit(f"unknown command {command}")
