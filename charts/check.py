#!/usr/bin/env python3
"""Checks the devdb chart without a cluster: helm lint (strict), then render it with the default
values, with every option on and with a dual-stack NLB, and validate each manifest against the
official Kubernetes JSON schemas (kubernetes-validate --strict; the defaults also against the oldest Kubernetes the chart
accepts). Also evaluates the controller's admission policy (CEL, with cel-python) on the requests
it must allow and refuse, renders the values it must refuse, checks the load balancers (a target
in every zone, IP families) and that the database image's AWS CLI reads EKS Pod Identity
credentials. Needs helm-python-sdk, kubernetes-validate, cel-python and PyYAML: the tests run it
in the environment they install at target/python-tools (testkit/src/python.rs). Exits non-zero on
any finding."""

import json
import pathlib
import re
import subprocess
import sys
import tempfile

import celpy
import helm_python as helm
import yaml
from helm_python import _native

CHART = pathlib.Path(__file__).resolve().parent / "devdb"
DATABASE_IMAGE = CHART.parent.parent / "images" / "postgres-db.Dockerfile"
# The oldest Kubernetes the chart accepts (Chart.yaml's kubeVersion), and the one before it.
MIN_KUBERNETES, TOO_OLD_KUBERNETES = "v1.30.0", "v1.29.0"
# Offline, Helm sees no VolumeSnapshot CRDs: the variants render as on a cluster that has them.
CRDS_PRESENT = {"storage": {"checkSnapshotCrds": False}}
VARIANTS = {
    "defaults": CRDS_PRESENT,
    "everything-on": {
        "storage": {"checkSnapshotCrds": False},
        "tls": {"certManager": {"enabled": True}},
        "controller": {
            "replicas": 3,
            "tokensSecret": "devdb-tokens",
            "secretKeySecret": "devdb-key",
            "adminTokenSecret": "devdb-admin",
        },
        "loadBalancers": {
            "api": {"enabled": True, "sslCertificateArn": "arn:aws:acm:eu-west-1:123456789012:certificate/abc", "crossZone": False},
            "database": {"sourceRanges": ["203.0.113.0/24"], "crossZone": False},
        },
        "proxy": {"replicas": 3, "proxyProtocol": False, "adminTokenSecret": "devdb-proxy-metrics"},
        "ipFamily": "IPv6",
        "sources": {"serviceAccountAnnotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/r"}},
    },
    # Backups to S3 through IRSA: the role on the ServiceAccount the database pods run as.
    "backups-irsa": {
        **CRDS_PRESENT,
        "backups": {
            "enabled": True,
            "repository": "s3://acme-devdb/backups",
            "s3": {"region": "eu-west-1"},
            "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/devdb-backup"}},
        },
    },
    # Backups to an S3-compatible store with a key from an existing Secret.
    "backups-key": {
        **CRDS_PRESENT,
        "backups": {
            "enabled": True,
            "repository": "s3://devdb/backups",
            "s3": {"endpoint": "minio.storage.svc:9000", "region": "us-east-1", "pathStyle": True},
            "credentialsSecret": "devdb-backup-s3",
        },
    },
    # IPv4 pods behind a dual-stack NLB, with attributes of the user's beside the chart's.
    "dualstack-nlb": {
        **CRDS_PRESENT,
        "loadBalancers": {
            "database": {
                "ipAddressType": "dualstack",
                "annotations": {
                    "service.beta.kubernetes.io/aws-load-balancer-type": "external",
                    "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type": "ip",
                    "service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing",
                    "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol": "*",
                    "service.beta.kubernetes.io/aws-load-balancer-attributes": "deletion_protection.enabled=true",
                },
            },
        },
    },
}


def render(chart, values, kube_version=None):
    """The chart rendered as `helm install` would render it, for Kubernetes kube_version if given
    (the SDK's Chart.render has no such option; its native call does)."""
    if kube_version is None:
        return chart.render(values, name="devdb", namespace="devdb", is_install=True)
    options = {"name": "devdb", "namespace": "devdb", "is_install": True, "kube_version": kube_version}
    return json.loads(_native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(options)))


def documents(manifests):
    return [doc for path, text in manifests.items() if path.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc]


CONTROLLER = "system:serviceaccount:devdb:devdb-controller"
DEVDB = {"app.kubernetes.io/managed-by": "devdb"}


def namespace(name, labels=None):
    return {"metadata": {"name": name, **({"labels": labels} if labels is not None else {})}}


def binding(role, kind="ClusterRole"):
    return {"metadata": {"name": "devdb-controller"}, "roleRef": {"kind": kind, "name": role}}


# (what, resource, operation, object, oldObject, namespaceObject, allowed)
POLICY_CASES = [
    ("create its project namespace", "namespaces", "CREATE", namespace("devdb-shop", DEVDB), None, None, True),
    ("delete its project namespace", "namespaces", "DELETE", None, namespace("devdb-shop", DEVDB), None, True),
    ("relabel its namespace", "namespaces", "UPDATE", namespace("devdb-shop", DEVDB), namespace("devdb-shop", DEVDB), None, True),
    ("delete kube-system", "namespaces", "DELETE", None, namespace("kube-system", {}), None, False),
    ("delete an unlabelled namespace", "namespaces", "DELETE", None, namespace("devdb-other"), None, False),
    ("label another namespace as DevDB's", "namespaces", "UPDATE", namespace("devdb-x", DEVDB), namespace("devdb-x", {}), None, False),
    ("create an unlabelled namespace", "namespaces", "CREATE", namespace("devdb-shop", {}), None, None, False),
    ("create a labelled namespace not named devdb-", "namespaces", "CREATE", namespace("payments", DEVDB), None, None, False),
    ("bind the project role in its namespace", "rolebindings", "CREATE", binding("devdb-project"), None, namespace("devdb-shop", DEVDB), True),
    ("bind the project role in kube-system", "rolebindings", "CREATE", binding("devdb-project"), None, namespace("kube-system", {}), False),
    ("bind cluster-admin in its namespace", "rolebindings", "CREATE", binding("cluster-admin"), None, namespace("devdb-shop", DEVDB), False),
    ("bind a Role of the same name", "rolebindings", "CREATE", binding("devdb-project", "Role"), None, namespace("devdb-shop", DEVDB), False),
    ("delete a binding elsewhere", "rolebindings", "DELETE", None, binding("x"), namespace("default"), False),
]


def check_admission_policy(manifests) -> int:
    """Evaluates the policy's matchConditions, variables and validations on POLICY_CASES."""
    text = next(t for p, t in manifests.items() if p.endswith("admission-policy.yaml"))
    policy = next(d for d in yaml.safe_load_all(text) if d and d["kind"] == "ValidatingAdmissionPolicy")["spec"]
    env = celpy.Environment()

    def run(expression, activation):
        return env.program(env.compile(expression)).evaluate(activation)

    failures = 0
    for what, resource, operation, obj, old, ns, allowed in POLICY_CASES:
        for user, applies in ((CONTROLLER, True), ("system:serviceaccount:devdb:someone-else", False)):
            activation = {
                "request": celpy.json_to_cel(
                    {"userInfo": {"username": user}, "operation": operation, "resource": {"resource": resource}}
                ),
                "object": celpy.json_to_cel(obj),
                "oldObject": celpy.json_to_cel(old),
                "namespaceObject": celpy.json_to_cel(ns),
            }
            matched = all(bool(run(c["expression"], activation)) for c in policy["matchConditions"])
            if matched != applies:
                print(f"admission policy: {what} by {user}: matched={matched}")
                failures += 1
            if not matched:
                continue
            variables = celpy.celtypes.MapType()
            activation["variables"] = variables
            for variable in policy["variables"]:
                # Kubernetes evaluates variables only when used: one that cannot be evaluated
                # here (a namespace's namespaceObject) is an error value, as it would be there.
                try:
                    value = run(variable["expression"], activation)
                except celpy.evaluation.CELEvalError as error:
                    value = error
                variables[celpy.celtypes.StringType(variable["name"])] = value
            refusals = [v["message"] for v in policy["validations"] if not bool(run(v["expression"], activation))]
            if (not refusals) != allowed:
                print(f"admission policy: {what}: {'refused' if refusals else 'allowed'} ({refusals})")
                failures += 1
    print(f"admission policy: {len(POLICY_CASES)} requests checked")
    return failures


# Values (and a Kubernetes version) the chart must refuse to render, and words its message must
# contain.
REFUSALS = [
    ("no VolumeSnapshot CRDs in the cluster", {}, "no VolumeSnapshot CRDs", None),
    (
        "a public API load balancer without TLS",
        {**CRDS_PRESENT, "loadBalancers": {"api": {"enabled": True}}},
        "sslCertificateArn",
        None,
    ),
    (
        f"Kubernetes {TOO_OLD_KUBERNETES} (no ValidatingAdmissionPolicy v1, no preStop sleep by default)",
        CRDS_PRESENT,
        "Kubernetes 1.30 or later",
        TOO_OLD_KUBERNETES,
    ),
    (
        "IPv6 pods behind an IPv4-only NLB",
        {**CRDS_PRESENT, "ipFamily": "IPv6", "loadBalancers": {"database": {"ipAddressType": "ipv4"}}},
        "must be dualstack",
        None,
    ),
    (
        "an NLB IP address type the AWS Load Balancer Controller does not know",
        {**CRDS_PRESENT, "loadBalancers": {"database": {"ipAddressType": "ipv6"}}},
        "ipv4 or dualstack",
        None,
    ),
    (
        "cross-zone load balancing set in the annotations too",
        {
            **CRDS_PRESENT,
            "loadBalancers": {
                "database": {
                    "annotations": {"service.beta.kubernetes.io/aws-load-balancer-attributes": "load_balancing.cross_zone.enabled=false"}
                }
            },
        },
        "load_balancing.cross_zone.enabled",
        None,
    ),
    (
        "backups on without a repository",
        {**CRDS_PRESENT, "backups": {"enabled": True}},
        "repository",
        None,
    ),
    (
        "a backup repository that is not s3:// (the pods cannot reach a directory)",
        {**CRDS_PRESENT, "backups": {"enabled": True, "repository": "/mnt/backups"}},
        "repository",
        None,
    ),
    (
        "an unknown backup setting (a typo would leave backups unconfigured)",
        {**CRDS_PRESENT, "backups": {"enabled": True, "repository": "s3://b/p", "s3": {"pathstyle": True}}},
        "pathstyle",
        None,
    ),
]


def check_refusals(chart) -> int:
    failures = 0
    for what, values, words, kube_version in REFUSALS:
        try:
            render(chart, values, kube_version)
            print(f"refusal: {what}: rendered, but must be refused")
            failures += 1
        except Exception as error:  # the SDK's HelmRenderError
            if words not in str(error):
                print(f"refusal: {what}: refused without saying {words!r}: {error}")
                failures += 1
    print(f"refusals: {len(REFUSALS)} checked")
    return failures


# How long an NLB sends new connections to an IP target after its deregistration starts
# (AWS Load Balancer Controller issues 2366 and 3270 measure about two minutes).
NLB_DEREGISTRATION_SECONDS = 120


def check_drains(manifests) -> int:
    """Each Deployment serving clients keeps serving after SIGTERM for a while (a preStop sleep, or
    the proxy's own --drain-delay), within its grace period; the proxy, behind the NLB, at least
    as long as the NLB still sends it new connections."""
    failures = 0
    for path, text in manifests.items():
        for doc in yaml.safe_load_all(text) if path.endswith(".yaml") else []:
            if not doc or doc.get("kind") != "Deployment":
                continue
            pod = doc["spec"]["template"]["spec"]
            grace = pod.get("terminationGracePeriodSeconds", 30)
            for container in pod["containers"]:
                sleep = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
                drain = next((a.split("=", 1)[1] for a in container.get("args", []) if a.startswith("--drain-delay=")), None)
                delay = sleep or (int(drain.rstrip("s")) if drain else 0)
                if not 0 < delay < grace:
                    print(f"drain: {doc['metadata']['name']}/{container['name']}: keeps serving {delay}s of a {grace}s grace period")
                    failures += 1
                if drain and int(drain.rstrip("s")) < NLB_DEREGISTRATION_SECONDS:
                    print(f"drain: {doc['metadata']['name']}: accepts {drain} after SIGTERM, but the NLB sends new connections for {NLB_DEREGISTRATION_SECONDS}s")
                    failures += 1
    return failures


def check_proxy_key_stays_with_the_proxy(manifests) -> int:
    """Only the proxy mounts its TLS Secret whole; any other pod may project its ca.crt only."""
    failures = 0
    for path, text in manifests.items():
        for doc in yaml.safe_load_all(text) if path.endswith(".yaml") else []:
            if not doc or doc.get("kind") != "Deployment" or doc["metadata"]["name"].endswith("-proxy"):
                continue
            for volume in doc["spec"]["template"]["spec"].get("volumes", []):
                secret = volume.get("secret", {})
                if secret.get("secretName") == "devdb-proxy-tls" and secret.get("items") != [{"key": "ca.crt", "path": "ca.crt"}]:
                    print(f"secrets: {doc['metadata']['name']} mounts the proxy's TLS Secret beyond its ca.crt: {secret}")
                    failures += 1
    return failures


# What the controller asks of the API server in its own namespace (controller/kube/src/store.rs,
# leader.rs, key_guard.rs), by resource: its Role must allow each, or the request is refused at
# run time (the documents of sessions' times are listed by label, say).
CONTROLLER_NAMESPACE_REQUESTS = {
    "configmaps": {"get", "list", "create", "patch", "delete"},
    "leases": {"get", "create", "update"},
}


def check_controller_role(manifests) -> int:
    """The controller's Role in its namespace allows every request it makes there."""
    allowed = {}
    for path, text in manifests.items():
        for doc in yaml.safe_load_all(text) if path.endswith(".yaml") else []:
            if doc and doc.get("kind") == "Role" and doc["metadata"].get("namespace", "devdb") == "devdb" \
                    and "controller" in doc["metadata"]["name"]:
                for rule in doc.get("rules", []):
                    for resource in rule.get("resources", []):
                        allowed.setdefault(resource, set()).update(rule.get("verbs", []))
    failures = 0
    for resource, verbs in CONTROLLER_NAMESPACE_REQUESTS.items():
        missing = verbs - allowed.get(resource, set())
        if missing:
            print(f"rbac: the controller may not {sorted(missing)} {resource} in its namespace, which it does")
            failures += 1
    return failures


def deployments(manifests):
    """The Deployments rendered, by name."""
    found = {}
    for path, text in manifests.items():
        for doc in yaml.safe_load_all(text) if path.endswith(".yaml") else []:
            if doc and doc.get("kind") == "Deployment":
                found[doc["metadata"]["name"]] = doc
    return found


def check_sampling_speaks_the_proxys_protocol(manifests) -> int:
    """The controller samples databases through the proxy's Service: with the proxy expecting a
    PROXY header on every connection (--proxy-protocol), the sampler must send one too."""
    found = deployments(manifests)
    proxy = found["devdb-proxy"]["spec"]["template"]["spec"]["containers"][0]
    controller = found["devdb-controller"]["spec"]["template"]["spec"]["containers"][0]
    expects = "--proxy-protocol" in proxy.get("args", [])
    sends = next((e.get("value") for e in controller.get("env", []) if e["name"] == "DEVDB_CONTROLLER_MONITOR_PROXY_PROTOCOL"), None)
    if sends != str(expects).lower():
        print(f"sampling: the proxy expects a PROXY header: {expects}; the controller's sampler sends one: {sends}")
        return 1
    return 0


def check_admin_token(manifests, values) -> int:
    """The proxies follow the controller with the admin token of one Secret: the user's
    (controller.adminTokenSecret, which survives any re-render, as GitOps renders at every sync)
    and then none generated, or the one the chart generates."""
    own = values.get("controller", {}).get("adminTokenSecret")
    wanted = own or "devdb-admin-token"
    generated = any(
        doc and doc.get("kind") == "Secret" and doc["metadata"]["name"] == "devdb-admin-token"
        for path, text in manifests.items() if path.endswith(".yaml") for doc in yaml.safe_load_all(text)
    )
    failures = 0
    if generated == bool(own):
        print(f"admin token: controller.adminTokenSecret={own!r}, yet the chart generates one: {generated}")
        failures += 1
    found = deployments(manifests)
    for deployment, variable in (("devdb-controller", "DEVDB_CONTROLLER_ADMIN_TOKEN"), ("devdb-proxy", "DEVDB_PROXY_ROUTES_TOKEN")):
        env = found[deployment]["spec"]["template"]["spec"]["containers"][0].get("env", [])
        ref = next((e["valueFrom"]["secretKeyRef"]["name"] for e in env if e["name"] == variable), None)
        if ref != wanted:
            print(f"admin token: {deployment} reads {variable} from {ref}, not {wanted}")
            failures += 1
    return failures


def check_disruptions(manifests) -> int:
    """Every Deployment of several replicas has a PodDisruptionBudget keeping one, and spreads
    its replicas over zones, so a drain or a zone outage leaves one serving."""
    failures = 0
    docs = [doc for path, text in manifests.items() if path.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc]
    budgets = [d["spec"]["selector"]["matchLabels"] for d in docs if d.get("kind") == "PodDisruptionBudget"]
    for name, deployment in deployments(manifests).items():
        if deployment["spec"].get("replicas", 1) < 2:
            continue
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        if not any(all(labels.get(k) == v for k, v in b.items()) for b in budgets):
            print(f"disruptions: {name} has no PodDisruptionBudget")
            failures += 1
        spread = deployment["spec"]["template"]["spec"].get("topologySpreadConstraints", [])
        if not any(c.get("topologyKey") == "topology.kubernetes.io/zone" for c in spread):
            print(f"disruptions: {name} is not spread over zones")
            failures += 1
    return failures


# Zones of a stock EKS VPC, each with a subnet of the NLB, hence a node of it.
NLB_ZONES = 3


def check_load_balancers(manifests, values) -> int:
    """Each NLB reaches a target from every one of its nodes: cross-zone load balancing is on, or
    the Deployment behind it has a replica in every zone (at least NLB_ZONES, spread strictly).
    Its Service is single-stack of the cluster's family, and the NLB is dual-stack whenever the
    targets are IPv6 (the AWS Load Balancer Controller registers IPv6 pods only in a dual-stack
    NLB). What the user annotated is kept, attribute lists included."""
    failures = 0
    docs = documents(manifests)
    family = values.get("ipFamily", "IPv4")
    found = deployments(manifests)
    for service in (d for d in docs if d.get("kind") == "Service" and d["spec"].get("type") == "LoadBalancer"):
        name = service["metadata"]["name"]
        annotations = service["metadata"].get("annotations", {})
        attributes = dict(a.split("=", 1) for a in annotations.get("service.beta.kubernetes.io/aws-load-balancer-attributes", "").split(",") if a)
        selector = service["spec"]["selector"]
        targets = [d for d in found.values() if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items())]
        if attributes.get("load_balancing.cross_zone.enabled") != "true":
            for target in targets:
                replicas = target["spec"].get("replicas", 1)
                spread = target["spec"]["template"]["spec"].get("topologySpreadConstraints", [])
                strict = any(c.get("topologyKey") == "topology.kubernetes.io/zone" and c.get("whenUnsatisfiable") == "DoNotSchedule" for c in spread)
                if replicas < NLB_ZONES or not strict:
                    print(
                        f"load balancers: {name} has cross-zone load balancing off, and {target['metadata']['name']} "
                        f"({replicas} replicas, strict zone spread: {strict}) may leave some of {NLB_ZONES} zones' NLB nodes without a target"
                    )
                    failures += 1
        if service["spec"].get("ipFamilies") != [family] or service["spec"].get("ipFamilyPolicy") != "SingleStack":
            print(f"load balancers: {name} has ipFamilies {service['spec'].get('ipFamilies')} ({service['spec'].get('ipFamilyPolicy')}), not [{family}] SingleStack")
            failures += 1
        address_type = annotations.get("service.beta.kubernetes.io/aws-load-balancer-ip-address-type")
        lb = values.get("loadBalancers", {}).get("api" if name.endswith("-api") else "database", {})
        wanted = lb.get("ipAddressType") or ("dualstack" if family == "IPv6" else "ipv4")
        if address_type != wanted:
            print(f"load balancers: {name} is {address_type!r}, not {wanted!r} (ipFamily {family}, ipAddressType {lb.get('ipAddressType')!r})")
            failures += 1
        for key, value in lb.get("annotations", {}).items():
            kept = annotations.get(key, "")
            if value != kept and not (key.endswith("-attributes") and value in kept.split(",")):
                print(f"load balancers: {name} lost the annotation {key}={value} ({kept!r})")
                failures += 1
    return failures


def check_admission_policy_versions(chart) -> int:
    """At the oldest Kubernetes the chart accepts the admission policy renders, in the GA API
    (admissionregistration.k8s.io/v1); turned off, NOTES.txt says what protection is missing."""
    failures = 0
    manifests = render(chart, CRDS_PRESENT, MIN_KUBERNETES)
    kinds = {d["kind"]: d["apiVersion"] for d in documents(manifests)}
    for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
        if kinds.get(kind) != "admissionregistration.k8s.io/v1":
            print(f"admission policy: Kubernetes {MIN_KUBERNETES}: {kind} is {kinds.get(kind)}, not admissionregistration.k8s.io/v1")
            failures += 1
    manifests = render(chart, {**CRDS_PRESENT, "rbac": {"admissionPolicy": False}})
    notes = next((t for p, t in manifests.items() if p.endswith("NOTES.txt")), "")
    if any(d["kind"].startswith("ValidatingAdmissionPolicy") for d in documents(manifests)):
        print("admission policy: rendered with rbac.admissionPolicy=false")
        failures += 1
    if "admission policy is off" not in notes or "kube-system" not in notes:
        print("admission policy: off, and NOTES.txt does not say what the controller may then do")
        failures += 1
    return failures


# EKS Pod Identity credentials (AWS_CONTAINER_CREDENTIALS_FULL_URI with
# AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE) need AWS CLI 2.15.0 or later (v1: 1.30.0).
POD_IDENTITY_AWS_CLI = (2, 15, 0)


BACKUP_ENV = ("DEVDB_BACKUP_REPO", "DEVDB_BACKUP_S3_ENDPOINT", "DEVDB_BACKUP_S3_REGION", "DEVDB_BACKUP_S3_PATH_STYLE")


def check_backups(manifests, values) -> int:
    """With backups on, the controller gets the repository and its S3 settings, the annotations of
    the ServiceAccount database pods with backups run as (IRSA's role), and an access key only
    from the named Secret, never as a value; with them off, none of it."""
    backups = values.get("backups", {})
    controller = deployments(manifests)["devdb-controller"]
    env = {e["name"]: e for e in controller["spec"]["template"]["spec"]["containers"][0]["env"]}
    failures = []
    if not backups.get("enabled"):
        given = [n for n in env if n in BACKUP_ENV or n.startswith("AWS_") or "BACKUP" in n]
        if given:
            failures.append(f"backups off, but the controller gets {given}")
    else:
        s3 = backups.get("s3", {})
        wanted = {
            "DEVDB_BACKUP_REPO": backups["repository"],
            "DEVDB_BACKUP_S3_ENDPOINT": s3.get("endpoint") or None,
            "DEVDB_BACKUP_S3_REGION": s3.get("region") or None,
            "DEVDB_BACKUP_S3_PATH_STYLE": "true" if s3.get("pathStyle") else None,
        }
        for name, value in wanted.items():
            if env.get(name, {}).get("value") != value:
                failures.append(f"{name} is {env.get(name, {}).get('value')!r}, not {value!r}")
        annotations = backups.get("serviceAccount", {}).get("annotations", {})
        given = env.get("DEVDB_CONTROLLER_BACKUP_ACCOUNT_ANNOTATIONS", {}).get("value", "")
        for key, value in annotations.items():
            if f"{key}={value}" not in given.split(","):
                failures.append(f"the backup account's annotation {key} is not passed on (got {given!r})")
        secret = backups.get("credentialsSecret")
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            ref = env.get(name, {}).get("valueFrom", {}).get("secretKeyRef", {})
            if secret and (ref.get("name") != secret or "value" in env.get(name, {})):
                failures.append(f"{name} does not come from Secret {secret}: {env.get(name)}")
            if not secret and name in env:
                failures.append(f"{name} given without backups.credentialsSecret (IRSA needs none)")
    # In a project's namespace: the backup account and Secret made, the backup Job's log read.
    project_role = next(d for d in documents(manifests) if d.get("kind") == "ClusterRole" and d["metadata"]["name"] == "devdb-project")
    allowed = {(r, v) for rule in project_role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    for need in [("pods/log", "get"), ("serviceaccounts", "create"), ("serviceaccounts", "patch"), ("secrets", "patch"), ("jobs", "create"), ("jobs", "delete")]:
        if need not in allowed:
            failures.append(f"the project role may not {need[1]} {need[0]}, which backups need")
    for failure in failures:
        print(f"backups: {failure}")
    return len(failures)


def check_database_image_aws_cli() -> int:
    """The database image (restore Jobs fetch s3:// sources with its `aws`) fails to build with an
    AWS CLI older than one that reads EKS Pod Identity credentials: Debian 12's own (2.9.19)
    cannot."""
    text = DATABASE_IMAGE.read_text()
    guard = re.search(r'aws --version.*\n(?:.*\n)?.*dpkg --compare-versions "\$\w+" ge (\d+)\.(\d+)\.(\d+)', text)
    least = tuple(int(g) for g in guard.groups()) if guard else None
    if least is None or least < POD_IDENTITY_AWS_CLI:
        print(f"database image: its build accepts an AWS CLI older than {POD_IDENTITY_AWS_CLI} (least accepted: {least}), which cannot read EKS Pod Identity credentials")
        return 1
    print(f"database image: the AWS CLI is at least {'.'.join(map(str, least))} (reads EKS Pod Identity credentials)")
    return 0


def controller_env() -> int:
    """Prints the environment variable names the chart gives the controller, one per line: with
    the defaults, and with backups on (every backup setting set)."""
    chart = helm.Chart.load(CHART)
    names = []
    for values in (CRDS_PRESENT, VARIANTS["backups-key"]):
        for path, text in chart.render(values, name="devdb", namespace="devdb", is_install=True).items():
            if path.endswith("templates/controller.yaml"):
                for line in text.splitlines():
                    line = line.strip()
                    if line.startswith("- { name: ") or line.startswith("- name: "):
                        name = line.split("name: ", 1)[1].split(",", 1)[0].strip()
                        if name.isupper() and name not in names:  # variables, not containers or ports
                            names.append(name)
    print("\n".join(names))
    return 0


def main() -> int:
    if sys.argv[1:] == ["--controller-env"]:
        return controller_env()
    failures = 0
    for kube_version in (MIN_KUBERNETES, "v1.33.0"):
        report = helm.lint(str(CHART), strict=True, kube_version=kube_version)
        for message in report.get("messages", []):
            print(f"lint ({kube_version}): severity {message['severity']} {message['path']}: {message['error']}")
            failures += message["severity"] >= 2
        failures += len(report.get("errors") or [])

    chart = helm.Chart.load(CHART)
    crds = chart.crds
    print(f"chart {chart.name} {chart.version}: {len(crds)} CRDs")
    if len(crds) != 2:
        failures += 1
    failures += check_refusals(chart)
    failures += check_admission_policy_versions(chart)
    failures += check_database_image_aws_cli()
    with tempfile.TemporaryDirectory() as tmp:
        for variant, values in VARIANTS.items():
            manifests = chart.render(values, name="devdb", namespace="devdb", is_install=True)
            files = []
            for path, text in sorted(manifests.items()):
                if not text.strip() or path.endswith("NOTES.txt"):
                    continue
                out = pathlib.Path(tmp) / variant / path.replace("/", "_")
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(text)
                files.append(str(out))
            if variant == "defaults":
                failures += check_admission_policy(manifests)
                failures += check_drains(manifests)
                failures += check_proxy_key_stays_with_the_proxy(manifests)
                failures += check_controller_role(manifests)
            failures += check_sampling_speaks_the_proxys_protocol(manifests)
            failures += check_admin_token(manifests, values)
            failures += check_disruptions(manifests)
            failures += check_load_balancers(manifests, values)
            failures += check_backups(manifests, values)
            notes = next((t for p, t in manifests.items() if p.endswith("NOTES.txt")), "")
            if "kubectl" not in notes:
                print(f"{variant}: NOTES.txt does not say how to connect")
                failures += 1
            kinds = "\n".join(manifests.values())
            if variant == "defaults" and "kind: StorageClass" not in kinds:
                print("defaults: no StorageClass for the volumes (a stock EKS cluster has none that snapshots)")
                failures += 1
            print(f"{variant}: {len(files)} manifests")
            # The defaults also against the oldest Kubernetes the chart accepts: no field newer.
            for version in ([None, MIN_KUBERNETES.lstrip("v")] if variant == "defaults" else [None]):
                versions = ["-k", version] if version else []
                result = subprocess.run(["kubernetes-validate", "--strict", *versions, *files], capture_output=True, text=True)
                print(result.stdout + result.stderr, end="")
                failures += result.returncode != 0
    print("chart check:", "FAILED" if failures else "ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
