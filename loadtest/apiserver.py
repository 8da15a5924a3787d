#!/usr/bin/env python3
"""An in-memory Kubernetes API server for the kinds DevDB's controller uses, for running the
controller where no cluster can be installed: its image in a container (images/run.sh), and the
control plane at a thousand databases (loadtest/kube-scale.sh).

What it serves, for any group/version/resource path (core /api/v1 and /apis/<group>/<version>,
namespaced or cluster-wide):
  GET (one object; a list, with labelSelector and fieldSelector=metadata.name; watch=true streams
  ADDED/MODIFIED/DELETED events and BOOKMARKs until timeoutSeconds), POST (create; 409 if it
  exists), PUT (replace; 409 on a stale resourceVersion), PATCH (merge, strategic merge and
  server-side apply are all applied as a JSON merge patch, apply creating what is absent; JSON
  patch for add/replace/remove), DELETE (an object with finalizers gets a deletionTimestamp and
  goes once they are removed), and the /status subresource.
What it does not do: validation, admission, defaulting, garbage collection, or any controller
(no pod is ever scheduled: objects are what clients wrote, and --seed can add what a kubelet or a
CSI driver would have written). With --simulate it plays the cluster's part in the barest way:
a Job succeeds as soon as it is made, a VolumeSnapshot is ready to use, and a StatefulSet's
replicas are all ready (or gone when scaled to 0), each written as its controller would write
the status (a status write, a MODIFIED event; counted apart from clients' requests).

It counts every request (by verb and resource) and the bytes of every object written, and
prints the counters as JSON on SIGUSR1, at exit, and at GET /_counters (POST /_counters/reset
zeroes them).

Usage: apiserver.py --listen 127.0.0.1:6443 [--tls-dir D | --tls-cert F --tls-key K] [--seed FILE.json ...]
  --tls-dir: serve TLS with a certificate for 127.0.0.1 from a CA made there with openssl
  (D/ca.crt is what clients verify it with: kubeconfig's certificate-authority).
  --seed: a JSON list of objects (each with apiVersion, kind, metadata; `resource` names the
  plural when it is not the kind's lower-case plural) created before serving.
  --ready-file F: written once listening (its content: host:port).
"""

import argparse
import bisect
import copy
import json
import signal
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Plural resource -> kind, for lists and for objects created without a kind.
KINDS = {
    "namespaces": "Namespace", "configmaps": "ConfigMap", "secrets": "Secret", "services": "Service",
    "serviceaccounts": "ServiceAccount", "persistentvolumeclaims": "PersistentVolumeClaim", "pods": "Pod",
    "events": "Event", "endpoints": "Endpoints", "statefulsets": "StatefulSet", "deployments": "Deployment",
    "jobs": "Job", "networkpolicies": "NetworkPolicy", "rolebindings": "RoleBinding", "roles": "Role",
    "leases": "Lease", "storageclasses": "StorageClass", "volumesnapshots": "VolumeSnapshot",
    "volumesnapshotclasses": "VolumeSnapshotClass", "projects": "Project", "databases": "Database",
    "poddisruptionbudgets": "PodDisruptionBudget", "customresourcedefinitions": "CustomResourceDefinition",
}


def merge(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = merge(target.get(key), value)
    return target


def json_patch(target, operations):
    for op in operations:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = target
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                parent.insert(len(parent) if last == "-" else int(last), op["value"]) if op["op"] == "add" else parent.__setitem__(int(last), op["value"])
            else:
                parent[last] = op["value"]
        elif op["op"] == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                parent.pop(last, None)
        elif op["op"] == "test":
            pass
        else:
            raise ValueError(f"unsupported JSON patch op {op['op']}")
    return target


class Store:
    def __init__(self):
        self.lock = threading.Condition()
        self.objects = {}  # (prefix, resource, namespace, name) -> object
        self.version = 0
        self.events = []  # (version, prefix, resource, namespace, type, object)
        self.counters = {"requests": {}, "bytes_written": 0, "objects_written": 0, "watch_events_sent": 0, "started": time.time()}

    def count(self, verb, resource, written=0):
        with self.lock:
            key = f"{verb} {resource}"
            self.counters["requests"][key] = self.counters["requests"].get(key, 0) + 1
            if written:
                self.counters["bytes_written"] += written
                self.counters["objects_written"] += 1

    def snapshot(self):
        with self.lock:
            c = copy.deepcopy(self.counters)
        c["seconds"] = round(time.time() - c.pop("started"), 3)
        c["requests_total"] = sum(c["requests"].values())
        return c

    def reset(self):
        with self.lock:
            self.counters = {"requests": {}, "bytes_written": 0, "objects_written": 0, "watch_events_sent": 0, "started": time.time()}

    def _record(self, kind, key, obj):
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.events.append((self.version, key[0], key[1], key[2], kind, copy.deepcopy(obj)))
        if len(self.events) > 20000:
            del self.events[:10000]
        self.lock.notify_all()

    def put(self, key, obj, event="ADDED"):
        with self.lock:
            meta = obj.setdefault("metadata", {})
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            meta.setdefault("generation", 1)
            if key[2]:
                meta["namespace"] = key[2]
            self.objects[key] = obj
            self._record(event, key, obj)
            return copy.deepcopy(obj)

    def delete(self, key):
        with self.lock:
            obj = self.objects.get(key)
            if obj is None:
                return None
            if obj["metadata"].get("finalizers"):
                obj["metadata"].setdefault("deletionTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                self._record("MODIFIED", key, obj)
                return copy.deepcopy(obj)
            del self.objects[key]
            self._record("DELETED", key, obj)
            return copy.deepcopy(obj)


STORE = Store()
SIMULATE = False


def simulate(key, obj):
    """What the cluster's controllers would write after `obj` was written (see --simulate)."""
    prefix, resource = key[0], key[1]
    status = obj.get("status") or {}
    if resource == "jobs" and not status.get("succeeded"):
        status = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    elif resource == "volumesnapshots" and not status.get("readyToUse"):
        status = {"readyToUse": True, "restoreSize": "1Gi", "creationTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    elif resource == "statefulsets":
        replicas = (obj.get("spec") or {}).get("replicas", 1)
        if status.get("readyReplicas", 0) == replicas and status.get("replicas", 0) == replicas:
            return
        status = {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
                  "currentReplicas": replicas, "updatedReplicas": replicas, "observedGeneration": obj["metadata"].get("generation", 1)}
    else:
        return
    with STORE.lock:
        current = STORE.objects.get(key)
        if current is None:
            return
        updated = copy.deepcopy(current)
        updated["status"] = status
        STORE.put(key, updated, "MODIFIED")
        STORE.counters["simulated_writes"] = STORE.counters.get("simulated_writes", 0) + 1


def matches(obj, namespace, labels, names):
    meta = obj.get("metadata", {})
    if namespace and meta.get("namespace") != namespace:
        return False
    if names and meta.get("name") not in names:
        return False
    have = meta.get("labels") or {}
    for requirement in labels:
        if "!=" in requirement:
            k, v = requirement.split("!=", 1)
            if have.get(k) == v:
                return False
        elif "=" in requirement:
            k, v = requirement.split("=", 1)
            if have.get(k.rstrip("=")) != v:
                return False
        elif requirement.startswith("!"):
            if requirement[1:] in have:
                return False
        elif requirement and requirement not in have:
            return False
    return True


def parse(path):
    """(prefix, namespace, resource, name, subresource) of an API path, or None."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        prefix, rest = "api/v1", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        prefix, rest = f"apis/{parts[1]}/{parts[2]}", parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 2 and rest[0] == "namespaces" and (len(rest) > 2):
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return None
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    return prefix, namespace, resource, name, sub


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        return self.raw, (json.loads(self.raw) if self.raw.strip() else None)

    def route(self, verb):
        # Every body is read, whether the verb uses it or not (DELETE sends DeleteOptions), so
        # the next request on the connection starts where it should.
        length = int(self.headers.get("Content-Length") or 0)
        self.raw = self.rfile.read(length) if length else b""
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/_counters":
            if verb == "POST":
                STORE.reset()
            return self.reply(200, STORE.snapshot())
        if url.path in ("/version", "/healthz", "/readyz", "/livez"):
            return self.reply(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0-devdb-fake"})
        parsed = parse(url.path)
        if parsed is None:
            return self.reply(404, status(404, "NotFound", f"the server could not find the requested resource {url.path}"))
        prefix, namespace, resource, name, sub = parsed
        handler = getattr(self, f"do_{verb.lower()}_{'one' if name else 'many'}", None)
        if handler is None:
            return self.reply(405, status(405, "MethodNotAllowed", f"{verb} is not allowed here"))
        return handler(prefix, namespace, resource, name, sub, query)

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_PUT(self):
        self.route("PUT")

    def do_PATCH(self):
        self.route("PATCH")

    def do_DELETE(self):
        self.route("DELETE")

    # one object
    def do_get_one(self, prefix, namespace, resource, name, sub, query):
        STORE.count("get", resource)
        with STORE.lock:
            obj = STORE.objects.get((prefix, resource, namespace, name))
            data = json.dumps(obj).encode() if obj is not None else None
        if data is None:
            return self.reply(404, status(404, "NotFound", f'{resource} "{name}" not found'))
        return self.reply(200, data)

    def do_put_one(self, prefix, namespace, resource, name, sub, query):
        raw, new = self.body()
        STORE.count("update", resource, len(raw))
        key = (prefix, resource, namespace, name)
        with STORE.lock:
            old = STORE.objects.get(key)
            if old is None:
                return self.reply(404, status(404, "NotFound", f'{resource} "{name}" not found'))
            wanted = (new.get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != old["metadata"]["resourceVersion"]:
                return self.reply(409, status(409, "Conflict", f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified'))
            if sub == "status":
                new = merge(copy.deepcopy(old), {"status": new.get("status")})
            else:
                new.setdefault("metadata", {})
                for keep in ("uid", "creationTimestamp"):
                    new["metadata"][keep] = old["metadata"].get(keep)
                if "status" in old and "status" not in new:
                    new["status"] = old["status"]
            written = STORE.put(key, new, "MODIFIED")
        if SIMULATE:
            simulate(key, written)
        return self.reply(200, STORE.objects.get(key, written))

    def do_patch_one(self, prefix, namespace, resource, name, sub, query):
        raw, patch = self.body()
        STORE.count("patch", resource, len(raw))
        kind = self.headers.get("Content-Type", "")
        key = (prefix, resource, namespace, name)
        with STORE.lock:
            old = STORE.objects.get(key)
            if old is None and "apply-patch" not in kind:
                return self.reply(404, status(404, "NotFound", f'{resource} "{name}" not found'))
            new = copy.deepcopy(old) if old else {"metadata": {"name": name}}
            if "json-patch" in kind:
                new = json_patch(new, patch)
            else:
                if sub == "status":
                    patch = {"status": (patch or {}).get("status")}
                new = merge(new, patch)
            new.setdefault("kind", KINDS.get(resource, resource))
            obj = STORE.put(key, new, "MODIFIED" if old else "ADDED")
            if old and old["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
                STORE.delete(key)
        if SIMULATE:
            simulate(key, obj)
        return self.reply(200 if old else 201, obj)

    def do_delete_one(self, prefix, namespace, resource, name, sub, query):
        STORE.count("delete", resource)
        obj = STORE.delete((prefix, resource, namespace, name))
        if obj is None:
            return self.reply(404, status(404, "NotFound", f'{resource} "{name}" not found'))
        return self.reply(200, obj)

    # collections
    def do_post_many(self, prefix, namespace, resource, name, sub, query):
        raw, obj = self.body()
        STORE.count("create", resource, len(raw))
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        key = (prefix, resource, namespace, meta.get("name"))
        with STORE.lock:
            if key in STORE.objects:
                return self.reply(409, status(409, "AlreadyExists", f'{resource} "{meta.get("name")}" already exists'))
            obj.setdefault("kind", KINDS.get(resource, resource))
            created = STORE.put(key, obj)
        if SIMULATE:
            simulate(key, created)
        return self.reply(201, created)

    def do_delete_many(self, prefix, namespace, resource, name, sub, query):
        STORE.count("deletecollection", resource)
        labels = [r for r in query.get("labelSelector", "").split(",") if r]
        with STORE.lock:
            keys = [k for k, o in STORE.objects.items() if k[:2] == (prefix, resource) and matches(o, namespace, labels, None)]
            for key in keys:
                STORE.delete(key)
        return self.reply(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

    def do_get_many(self, prefix, namespace, resource, name, sub, query):
        labels = [r for r in query.get("labelSelector", "").split(",") if r]
        names = None
        for field in [f for f in query.get("fieldSelector", "").split(",") if f]:
            if field.startswith("metadata.name="):
                names = {field.split("=", 1)[1]}
        if query.get("watch") in ("true", "1"):
            STORE.count("watch", resource)
            return self.watch(prefix, namespace, resource, labels, names, query)
        STORE.count("list", resource)
        kind = KINDS.get(resource, resource)
        api_version = prefix.split("/", 1)[1] if prefix.startswith("apis/") else "v1"
        with STORE.lock:
            # Serialized under the lock (objects are replaced, never changed in place, but a
            # list must be one moment's), sent after it.
            items = [o for k, o in sorted(STORE.objects.items()) if k[:2] == (prefix, resource) and matches(o, namespace, labels, names)]
            data = json.dumps({"kind": f"{kind}List", "apiVersion": api_version, "metadata": {"resourceVersion": str(STORE.version)}, "items": items}).encode()
        self.reply(200, data)

    def watch(self, prefix, namespace, resource, labels, names, query):
        since = int(query.get("resourceVersion") or 0)
        deadline = time.time() + min(float(query.get("timeoutSeconds") or 290), 290)
        bookmarks = query.get("allowWatchBookmarks") == "true"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(event):
            data = json.dumps(event).encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        try:
            last_bookmark = time.time()
            while time.time() < deadline:
                with STORE.lock:
                    if STORE.version <= since:
                        STORE.lock.wait(timeout=1)
                    first = bisect.bisect_right(STORE.events, since, key=lambda e: e[0])
                    pending = [e for e in STORE.events[first:] if e[1:3] == (prefix, resource)]
                    since = max([since] + [e[0] for e in pending])
                    pending = [e for e in pending if matches(e[5], namespace, labels, names)]
                for _, _, _, _, kind, obj in pending:
                    send({"type": kind, "object": obj})
                    with STORE.lock:
                        STORE.counters["watch_events_sent"] += 1
                if bookmarks and time.time() - last_bookmark > 10:
                    send({"type": "BOOKMARK", "object": {"kind": KINDS.get(resource, resource), "apiVersion": "v1", "metadata": {"resourceVersion": str(since)}}})
                    last_bookmark = time.time()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


def seed(path):
    with open(path) as f:
        objects = json.load(f)
    for obj in objects:
        api_version, kind = obj["apiVersion"], obj["kind"]
        prefix = "api/v1" if api_version == "v1" else f"apis/{api_version}"
        resource = obj.pop("resource", None) or next((r for r, k in KINDS.items() if k == kind), kind.lower() + "s")
        meta = obj["metadata"]
        STORE.put((prefix, resource, meta.get("namespace"), meta["name"]), obj)


def make_tls(directory):
    """A CA and a server certificate for 127.0.0.1 signed by it, in `directory` (kube's client,
    rustls, refuses a self-signed certificate used as its own CA). Returns (cert, key)."""
    import os
    import subprocess
    os.makedirs(directory, exist_ok=True)
    cert, key, ca = (os.path.join(directory, f) for f in ("api.crt", "api.key", "ca.crt"))
    if os.path.exists(cert):
        return cert, key
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", *ec, "-keyout", os.path.join(directory, "ca.key"), "-out", ca, "-days", "2", "-subj", "/CN=devdb-test-apiserver-ca")
    run("req", *ec, "-keyout", key, "-out", os.path.join(directory, "api.csr"), "-subj", "/CN=kubernetes")
    ext = os.path.join(directory, "api.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", os.path.join(directory, "api.csr"), "-CA", ca, "-CAkey", os.path.join(directory, "ca.key"),
        "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext)
    return cert, key


class Server(ThreadingHTTPServer):
    """A thread per connection; a listen backlog for a thousand databases' clients at once (the
    default of 5 drops connection attempts, which then wait seconds for their SYN retransmits)."""

    daemon_threads = True
    request_queue_size = 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:6443")
    parser.add_argument("--tls-dir")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--seed", action="append", default=[])
    parser.add_argument("--ready-file")
    parser.add_argument("--simulate", action="store_true")
    args = parser.parse_args()
    global SIMULATE
    SIMULATE = args.simulate
    for path in args.seed:
        seed(path)
    host, port = args.listen.rsplit(":", 1)
    server = Server((host.strip("[]"), int(port)), Handler)
    if args.tls_dir:
        args.tls_cert, args.tls_key = make_tls(args.tls_dir)
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        # The handshake happens on the handler's thread at its first read, not in accept() on the
        # one thread that accepts every connection.
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    signal.signal(signal.SIGUSR1, lambda *_: print(json.dumps(STORE.snapshot()), flush=True))
    signal.signal(signal.SIGTERM, lambda *_: (print(json.dumps(STORE.snapshot()), flush=True), sys.exit(0)))
    if args.ready_file:
        with open(args.ready_file, "w") as f:
            f.write(f"{host}:{server.server_address[1]}")
    server.serve_forever()


if __name__ == "__main__":
    main()
