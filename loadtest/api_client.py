"""What loadtest/kube_scale.py and loadtest/local_scale.py share: calls of the controller's API
with a bearer token, and waiting until something settles."""

import json
import time
import urllib.request


def call(base, token, method, path, body=None, timeout=60):
    """`method path` on the API at `base`; the answer's JSON (None when empty)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    if data:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        raw = answer.read()
        return json.loads(raw) if raw else None


def wait_for(what, check, limit):
    """Calls `check` (returning done, state) every second until done; the seconds it took."""
    start = time.time()
    state = None
    while time.time() - start < limit:
        done, state = check()
        if done:
            return time.time() - start
        time.sleep(1)
    raise SystemExit(f"{what}: not settled after {limit} s: {state}")


def create_ready_projects(base, token, names, limit):
    """Creates projects `names` (owner `o<name>`, PostgreSQL 15, user `app`, database `shop`) and
    waits until every one is ready (a failed one ends the run); the seconds it took."""
    for name in names:
        call(base, token, "POST", "/v1/projects", {
            "name": name, "owner": f"o{name}", "dbVersion": "15",
            "defaultCredentials": {"username": "app", "database": "shop"},
        })

    def ready():
        listed = call(base, token, "GET", "/v1/projects")
        states = [p["status"] for p in listed]
        if "failed" in states:
            raise SystemExit(f"a project failed: {listed}")
        return all(s == "ready" for s in states) and len(states) == len(names), states

    return wait_for("projects", ready, limit)
