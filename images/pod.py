#!/usr/bin/env python3
"""Runs a Kubernetes pod spec with podman, as a kubelet would run it, for testing DevDB's images
where no cluster can run (images/run.sh). The spec comes from where the cluster would get it: a
Deployment the chart renders, or a Job or StatefulSet the controller wrote to the API server.

What is carried over, container by container (init containers first, each to completion):
  image, command and args; env (values, secretKeyRef from the API server, fieldRef
  metadata.name/metadata.namespace/status.podIP); the user and group ids (runAsUser, runAsGroup,
  fsGroup as a supplementary group) and runAsNonRoot (refused if the user would be root);
  readOnlyRootFilesystem (no tmpfs added); capabilities dropped; allowPrivilegeEscalation: false
  (no-new-privileges); volumes: persistentVolumeClaim (a host directory given with --claim),
  ephemeral and emptyDir (a directory of the pod's, shared by its containers; kubelet makes it
  0777), secret and projected secrets (files from the API server's Secrets, with items and
  modes; optional ones may be absent), mounted read-only where the spec says so; the service
  account token, CA and namespace, unless automountServiceAccountToken is false, with
  KUBERNETES_SERVICE_HOST/PORT as kubelet sets them.
What is not: resource limits and probes (no cgroup controller here), restart policies, images'
pull policies (images are local).

Usage: pod.py --spec POD.json --name NAME --namespace NS --api https://HOST:PORT --api-ca CA
              [--token T] [--claim NAME=DIR ...] [--network host|ns:PATH] [--pod-ip IP]
              [--add-host NAME:IP ...] [--image FROM=TO ...] [--detach] [--work DIR]
  --spec: a PodSpec, or an object holding one (Pod, Deployment, StatefulSet, Job).
  --detach: the last container runs in the background (its podman name is printed); else every
  container runs to completion and a failure ends the run with its exit status.
"""

import argparse
import base64
import json
import os
import resource
import ssl
import subprocess
import sys
import tempfile
import urllib.request

PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
# podman's default ulimits can exceed what this machine lets a container have (runc is refused):
# open files as this process may have them, and 4096 processes.
_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
LIMITS = ["--ulimit", f"nofile={_NOFILE}:{_NOFILE}", "--ulimit", "nproc=4096:4096"]
SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def pod_spec(obj):
    if "containers" in obj:
        return obj
    if obj.get("kind") == "Pod":
        return obj["spec"]
    return obj["spec"]["template"]["spec"]


class Api:
    def __init__(self, base, ca, token):
        self.base, self.token = base.rstrip("/"), token
        self.context = ssl.create_default_context(cafile=ca) if ca else None

    def secret(self, namespace, name):
        request = urllib.request.Request(f"{self.base}/api/v1/namespaces/{namespace}/secrets/{name}")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, context=self.context) as answer:
                secret = json.load(answer)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        data.update({k: v.encode() for k, v in (secret.get("stringData") or {}).items()})
        return data


def fail(message):
    print(f"pod.py: {message}", file=sys.stderr)
    sys.exit(2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--api", required=True)
    parser.add_argument("--api-ca")
    parser.add_argument("--token", default="")
    parser.add_argument("--claim", action="append", default=[])
    parser.add_argument("--network", default="host")
    parser.add_argument("--pod-ip", default="127.0.0.1")
    parser.add_argument("--add-host", action="append", default=[])
    parser.add_argument("--image", action="append", default=[])
    parser.add_argument("--detach", action="store_true")
    parser.add_argument("--work")
    args = parser.parse_args()

    with open(args.spec) as f:
        spec = pod_spec(json.load(f))
    api = Api(args.api, args.api_ca, args.token)
    claims = dict(c.split("=", 1) for c in args.claim)
    images = dict(i.split("=", 1) for i in args.image)
    work = args.work or tempfile.mkdtemp(prefix=f"pod-{args.name}-")
    os.makedirs(work, exist_ok=True)
    security = spec.get("securityContext") or {}
    fs_group = security.get("fsGroup")

    # Volumes, as host directories.
    volumes = {}
    for volume in spec.get("volumes") or []:
        name = volume["name"]
        path = os.path.join(work, "volumes", name)
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if claim not in claims:
                fail(f"volume {name}: claim {claim} needs --claim {claim}=DIR")
            volumes[name] = claims[claim]
            continue
        os.makedirs(path, exist_ok=True)
        volumes[name] = path
        if "emptyDir" in volume or "ephemeral" in volume:
            os.chmod(path, 0o777)
            if fs_group is not None and "ephemeral" in volume:
                os.chown(path, 0, fs_group)
                os.chmod(path, 0o2775)
            continue
        sources = []
        if "secret" in volume:
            sources.append((volume["secret"], volume["secret"].get("defaultMode", 0o644)))
        elif "projected" in volume:
            mode = volume["projected"].get("defaultMode", 0o644)
            sources.extend((s["secret"], mode) for s in volume["projected"]["sources"] if "secret" in s)
        else:
            fail(f"volume {name}: unsupported source {sorted(volume)}")
        for source, mode in sources:
            secret_name = source.get("secretName") or source.get("name")
            data = api.secret(args.namespace, secret_name)
            if data is None:
                if source.get("optional"):
                    continue
                fail(f"volume {name}: Secret {args.namespace}/{secret_name} does not exist (the pod would not start)")
            items = source.get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                if item["key"] not in data:
                    if source.get("optional"):
                        continue
                    fail(f"volume {name}: Secret {secret_name} has no key {item['key']}")
                file = os.path.join(path, item["path"])
                with open(file, "wb") as f:
                    f.write(data[item["key"]])
                if fs_group is None:
                    os.chmod(file, item.get("mode", mode))
                else:
                    # kubelet gives the files to the fsGroup, and that group may read them.
                    os.chown(file, 0, fs_group)
                    os.chmod(file, item.get("mode", mode) | 0o440)

    service_account = None
    if spec.get("automountServiceAccountToken") is not False:
        service_account = os.path.join(work, "serviceaccount")
        os.makedirs(service_account, exist_ok=True)
        for file, content in (("token", args.token), ("namespace", args.namespace)):
            with open(os.path.join(service_account, file), "w") as f:
                f.write(content)
        if args.api_ca:
            with open(args.api_ca) as src, open(os.path.join(service_account, "ca.crt"), "w") as dst:
                dst.write(src.read())
        os.system(f"chmod -R a+rX {service_account}")

    containers = [(c, True) for c in spec.get("initContainers") or []] + [(c, False) for c in spec["containers"]]
    for index, (container, init) in enumerate(containers):
        last = index == len(containers) - 1
        context = dict(security)
        context.update(container.get("securityContext") or {})
        user, group = context.get("runAsUser"), context.get("runAsGroup")
        if context.get("runAsNonRoot") and user in (None, 0):
            # kubelet checks the image's user then; all of DevDB's pods name theirs.
            fail(f"{container['name']}: runAsNonRoot without a runAsUser")
        command = [*PODMAN, "run", "--name", f"{args.name}-{container['name']}", "--replace", "--network", args.network, *LIMITS]
        command.append("--detach" if (args.detach and last) else "--rm")
        if user is not None:
            command += ["--user", f"{user}:{group if group is not None else user}"]
        if fs_group is not None:
            command += ["--group-add", str(fs_group)]
        if context.get("readOnlyRootFilesystem"):
            command += ["--read-only", "--read-only-tmpfs=false"]
        drop = (context.get("capabilities") or {}).get("drop") or []
        if drop:
            command += ["--cap-drop", ",".join(c.lower() for c in drop)]
        if context.get("allowPrivilegeEscalation") is False:
            command += ["--security-opt", "no-new-privileges"]
        for host in args.add_host:
            command += ["--add-host", host]
        env = {}
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = var["value"]
                continue
            source = var.get("valueFrom") or {}
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                data = api.secret(args.namespace, ref["name"])
                if data is None or ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    fail(f"{container['name']}: env {var['name']}: Secret {ref['name']} key {ref['key']} is missing")
                env[var["name"]] = data[ref["key"]].decode()
            elif "fieldRef" in source:
                field = source["fieldRef"]["fieldPath"]
                env[var["name"]] = {"metadata.name": args.name, "metadata.namespace": args.namespace, "status.podIP": args.pod_ip}[field]
            else:
                fail(f"{container['name']}: env {var['name']}: unsupported source {sorted(source)}")
        if service_account:
            env.setdefault("KUBERNETES_SERVICE_HOST", args.api.split("://", 1)[1].rsplit(":", 1)[0].strip("[]"))
            env.setdefault("KUBERNETES_SERVICE_PORT", args.api.rsplit(":", 1)[1])
            command += ["--volume", f"{service_account}:{SERVICE_ACCOUNT}:ro"]
        for key, value in env.items():
            command += ["--env", f"{key}={value}"]
        for mount in container.get("volumeMounts") or []:
            if mount["name"] not in volumes:
                fail(f"{container['name']}: mount of unknown volume {mount['name']}")
            source = volumes[mount["name"]]
            if mount.get("subPath"):
                source = os.path.join(source, mount["subPath"])
            command += ["--volume", f"{source}:{mount['mountPath']}{':ro' if mount.get('readOnly') else ''}"]
        if container.get("workingDir"):
            command += ["--workdir", container["workingDir"]]
        if container.get("command"):
            command += ["--entrypoint", json.dumps(container["command"])]
        command.append(images.get(container["image"], container["image"]))
        command += container.get("args") or []
        what = "init container" if init else "container"
        print(f"pod.py: {args.name}: {what} {container['name']}", file=sys.stderr, flush=True)
        if args.detach and last:
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            print(f"{args.name}-{container['name']}")
        else:
            status = subprocess.run(command).returncode
            if status != 0:
                print(f"pod.py: {args.name}: {what} {container['name']} exited with {status}", file=sys.stderr)
                sys.exit(status)


if __name__ == "__main__":
    main()
