#!/usr/bin/env python3
"""The client side of loadtest/local-scale.sh: populate (projects and the real databases through
the API, most of them stopped), insert (the other asleep databases as records of the state
database, while no controller runs), settle (until the restarted controller lists them all),
measure (the API's list, the dashboard's list page, the route table), summary (the figures as
JSON)."""

import http.cookiejar
import json
import os
import secrets
import sqlite3
import sys
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from api_client import call, create_ready_projects, wait_for


def project_names(projects):
    return [f"p{p:02d}" for p in range(projects)]


def database_name(project, index):
    return f"{project}-db{index:03d}"


def count(base, token):
    listed = call(base, token, "GET", "/v1/databases")
    by_status = {}
    for d in listed:
        by_status[d["status"]] = by_status.get(d["status"], 0) + 1
    return len(listed), by_status


def populate(base, token, projects, real, running, out):
    """PROJECTS empty projects, then REAL databases spread over them, created through the API;
    all but RUNNING of them are stopped through the API."""
    names = project_names(projects)
    started = time.time()
    projects_seconds = create_ready_projects(base, token, names, 600)
    print(f"{projects} projects ready in {projects_seconds:.0f} s", file=sys.stderr)
    databases = [(database_name(names[i % projects], i // projects), names[i % projects]) for i in range(real)]
    t = time.time()
    # A few at a time: each clone copies its snapshot and starts a server, on shared cores.
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda d: call(base, token, "POST", "/v1/databases",
                                     {"name": d[0], "project": d[1], "owner": f"o{d[1]}"}), databases))

    def all_running():
        total, by = count(base, token)
        if by.get("error"):
            raise SystemExit(f"a database failed: {by}")
        return by.get("running", 0) == real, by

    create_seconds = (time.time() - t) + wait_for("creates", all_running, 600)
    print(f"{real} databases created and running in {create_seconds:.0f} s", file=sys.stderr)
    stopped = [name for name, _ in databases[running:]]
    t = time.time()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: call(base, token, "POST", f"/v1/databases/{n}/stop"), stopped))

    def stops_done():
        total, by = count(base, token)
        return by.get("stopped", 0) == len(stopped) and by.get("running", 0) == running, by

    stop_seconds = (time.time() - t) + wait_for("stops", stops_done, 600)
    print(f"{len(stopped)} stopped in {stop_seconds:.0f} s", file=sys.stderr)
    json.dump({"projects_seconds": round(projects_seconds, 1), "create_seconds": round(create_seconds, 1),
               "stop_seconds": round(stop_seconds, 1), "real": real, "running": running,
               "real_names": [n for n, _ in databases], "stopped_names": stopped,
               "seconds": round(time.time() - started, 1)}, open(out, "w"))


def insert(state_db, projects, total, real):
    """The databases the API did not make, inserted as asleep records of the same schema: each a
    copy of a real stopped record of its project (its snapshot generation, settings, status
    `stopped`) with a name, id, port and password of its own. Run while no controller runs."""
    names = project_names(projects)
    conn = sqlite3.connect(state_db)
    rows = conn.execute("SELECT name, project, owner, doc FROM databases").fetchall()
    existing = {name for name, *_ in rows}
    used_ports = {json.loads(doc)["port"] for *_, doc in rows}
    templates = {}
    for name, project, owner, doc in rows:
        record = json.loads(doc)
        if record["status"] == "stopped" and str(record["want"]).lower() == "stop":
            templates.setdefault(project, (owner, record))
    missing = [p for p in names if p not in templates]
    if missing:
        raise SystemExit(f"no stopped database to copy in {missing}")
    # Ports no real instance uses (an asleep database keeps its port for its next start).
    ports = (p for p in range(20000, 65000) if p not in used_ports)
    added = 0
    with conn:
        for i in range(real, total):
            project = names[i % projects]
            name = database_name(project, i // projects)
            if name in existing:
                continue
            owner, template = templates[project]
            record = dict(template)
            record.update({
                "id": f"db-{secrets.token_hex(12)}",
                "name": name,
                "port": next(ports),
                "password": secrets.token_urlsafe(24),
                "created_at": template["created_at"],
                "error": None,
            })
            conn.execute("INSERT INTO databases (name, project, owner, doc) VALUES (?1, ?2, ?3, ?4)",
                         (name, project, owner, json.dumps(record, separators=(",", ":"))))
            added += 1
    conn.close()
    print(f"{added} asleep database records inserted ({len(rows)} made through the API)", file=sys.stderr)


def settle(base, token, total, running, out):
    """Until the restarted controller lists TOTAL databases, RUNNING of them running and the rest
    asleep."""
    def settled():
        listed, by = count(base, token)
        return listed == total and by.get("running", 0) == running and by.get("stopped", 0) == total - running, by

    seconds = wait_for("restart", settled, 600)
    print(f"{total} databases listed after {seconds:.0f} s", file=sys.stderr)
    json.dump({"settled_seconds": round(seconds, 1), "by_status": count(base, token)[1]}, open(out, "w"))


def percentile(values, q):
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 100)) - 1))]


def figures(seconds):
    return {"calls": len(seconds), "p50_ms": round(percentile(seconds, 50) * 1000, 1),
            "p99_ms": round(percentile(seconds, 99) * 1000, 1), "max_ms": round(max(seconds) * 1000, 1)}


def timed(opener, request, n, warmup=5):
    for _ in range(warmup):
        opener(request).read()
    seconds, size = [], 0
    for _ in range(n):
        t = time.perf_counter()
        with opener(request) as answer:
            body = answer.read()
        seconds.append(time.perf_counter() - t)
        size = len(body)
    return seconds, size, body


def sign_in(base, token):
    """The dashboard's sign-in, as a browser does it: the form's CSRF cookie, then the token."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(base + "/ui/sign-in?next=/ui/databases", timeout=30).read()
    csrf = next(c.value for c in jar if c.name == "devdb_csrf")
    form = urllib.parse.urlencode({"csrf": csrf, "token": token, "next": "/ui/databases"}).encode()
    with opener.open(urllib.request.Request(base + "/ui/sign-in", data=form, method="POST"), timeout=30) as answer:
        if not answer.geturl().endswith("/ui/databases"):
            raise SystemExit(f"sign-in did not lead to the list: {answer.geturl()}")
    if not any(c.name == "devdb_session" for c in jar):
        raise SystemExit("sign-in set no session cookie")
    return opener


def measure(base, token, calls, asleep, pid, out):
    """CALLS sequential GET /v1/databases (admin: every database), CALLS loads of the dashboard's
    database list signed in as the admin, the route table (GET /v1/routes and the first message
    of GET /v1/routes/watch, what a proxy is sent), and 50 writes of one record (PATCH of the
    asleep database ASLEEP's `protected`, on and off: no instance is touched); with the CPU time
    the controller (PID) spent per call of each."""
    def api(path):
        request = urllib.request.Request(base + path)
        request.add_header("Authorization", f"Bearer {token}")
        return request

    plain = lambda request: urllib.request.urlopen(request, timeout=120)  # noqa: E731
    load = [float(open("/proc/loadavg").read().split()[0])]
    cpu = cpu_seconds(pid)
    list_seconds, list_bytes, body = timed(plain, api("/v1/databases"), calls, warmup=0)
    list_cpu, cpu = cpu_seconds(pid) - cpu, cpu_seconds(pid)
    listed = len(json.loads(body))
    browser = sign_in(base, token)
    page = base + "/ui/databases"
    cpu = cpu_seconds(pid)
    page_seconds, page_bytes, html = timed(lambda r: browser.open(r, timeout=120), page, calls, warmup=0)
    page_cpu = cpu_seconds(pid) - cpu
    rows = html.decode().count('href="/ui/databases/')
    routes_seconds, routes_bytes, body = timed(plain, api("/v1/routes"), 20)
    table = json.loads(body)
    with urllib.request.urlopen(api("/v1/routes/watch"), timeout=60) as stream:
        pushed = stream.readline()
    patch_seconds = []
    cpu = cpu_seconds(pid)
    for i in range(50):
        t = time.perf_counter()
        call(base, token, "PATCH", f"/v1/databases/{asleep}", {"protected": i % 2 == 0})
        patch_seconds.append(time.perf_counter() - t)
    patch_cpu = cpu_seconds(pid) - cpu
    load.append(float(open("/proc/loadavg").read().split()[0]))
    per_call = lambda spent, n: round(spent * 1000 / n, 1)  # noqa: E731
    json.dump({
        "api_list": {**figures(list_seconds), "cpu_ms_per_call": per_call(list_cpu, calls), "bytes": list_bytes,
                     "databases": listed},
        "dashboard_list": {**figures(page_seconds), "cpu_ms_per_call": per_call(page_cpu, calls), "bytes": page_bytes,
                           "database_links": rows, "path": "/ui/databases"},
        "routes": {"get_bytes": routes_bytes, "pushed_bytes": len(pushed), "routes": len(table["routes"]),
                   "by_state": {s: sum(1 for r in table["routes"] if r["state"] == s)
                                for s in sorted({r["state"] for r in table["routes"]})},
                   "get": figures(routes_seconds)},
        "record_write": {**figures(patch_seconds), "cpu_ms_per_call": per_call(patch_cpu, 50),
                         "request": f"PATCH /v1/databases/{asleep}"},
        "machine_load_1m": {"before": load[0], "after": load[1], "cpus": os.cpu_count()},
    }, open(out, "w"))


def memory(pid):
    status = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            status[key] = int(value.split()[0])
    return {"rss_kib": status["VmRSS"], "hwm_kib": status["VmHWM"], "threads": status["Threads"]}


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks of 1/100 s


def sample(name, pid, out):
    """The memory (and CPU time so far) of process PID, recorded as NAME in OUT (a JSON object)."""
    try:
        taken = json.load(open(out))
    except FileNotFoundError:
        taken = {}
    taken[name] = {**memory(pid), "cpu_seconds": cpu_seconds(pid), "at": time.time()}
    json.dump(taken, open(out, "w"), indent=1)


def summary(work, projects, total, real, running, method, binaries):
    populate_ = json.load(open(f"{work}/populate.json"))
    settled = json.load(open(f"{work}/settle.json"))
    measured = json.load(open(f"{work}/measure.json"))
    small = json.load(open(f"{work}/measure-small.json"))
    samples = json.load(open(f"{work}/samples.json"))
    sizes = json.load(open(f"{work}/sizes.json"))
    log = json.load(open(f"{work}/log.json"))
    mib = lambda kib: round(kib / 1024, 1)  # noqa: E731
    c_small, c_big, c_idle = samples["controller-small"], samples["controller-1000"], samples["controller-idle-end"]
    p_small, p_big = samples["proxy-small"], samples["proxy-1000"]
    idle_start = samples["controller-idle-start"]
    idle_span = c_idle["at"] - idle_start["at"]
    result = {
        "databases": total, "running": running, "asleep": total - running, "projects": projects,
        "made_through_the_api": real, "inserted_as_records": total - real, "method": method,
        "binaries": binaries,
        "api_list": measured["api_list"],
        "dashboard_list": measured["dashboard_list"],
        "record_write": measured["record_write"],
        "machine_load_1m": measured["machine_load_1m"],
        f"at_{real}_databases": {k: small[k] for k in ("api_list", "dashboard_list", "record_write")}
                                | {"route_table_bytes": small["routes"]["pushed_bytes"]},
        "controller_memory": {
            f"at_{real}": {"rss_mib": mib(c_small["rss_kib"]), "hwm_mib": mib(c_small["hwm_kib"])},
            f"at_{total}": {"rss_mib": mib(c_big["rss_kib"]), "hwm_mib": mib(c_big["hwm_kib"]),
                            "threads": c_big["threads"]},
            "after_the_measurements": {"rss_mib": mib(c_idle["rss_kib"]), "hwm_mib": mib(c_idle["hwm_kib"])},
        },
        "controller_idle_cpu": {"seconds": round(idle_span), "cpu_share_percent":
                                round(100 * (c_idle["cpu_seconds"] - idle_start["cpu_seconds"]) / max(idle_span, 1), 2)},
        "routes": {**measured["routes"],
                   "proxy_memory": {f"at_{real}_routes": {"rss_mib": mib(p_small["rss_kib"])},
                                    f"at_{total}_routes": {"rss_mib": mib(p_big["rss_kib"]), "hwm_mib": mib(p_big["hwm_kib"])}},
                   "proxy_table_seen": log.get("proxy_routes_seen")},
        "restart": {"listed_after_seconds": settled["settled_seconds"], "by_status": settled["by_status"],
                    "controller_log_warnings": log["controller_warnings"], "controller_log_errors": log["controller_errors"],
                    "distinct_warnings": log["distinct"]},
        "disk": sizes,
        "setup_seconds": {"projects": populate_["projects_seconds"], "creates": populate_["create_seconds"],
                          "stops": populate_["stop_seconds"]},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "populate":
        populate(args[0], args[1], int(args[2]), int(args[3]), int(args[4]), args[5])
    elif command == "insert":
        insert(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif command == "settle":
        settle(args[0], args[1], int(args[2]), int(args[3]), args[4])
    elif command == "measure":
        measure(args[0], args[1], int(args[2]), args[3], int(args[4]), args[5])
    elif command == "sample":
        sample(args[0], int(args[1]), args[2])
    elif command == "summary":
        summary(args[0], int(args[1]), int(args[2]), int(args[3]), int(args[4]), args[5], args[6])
    else:
        raise SystemExit(f"unknown command {command}")
