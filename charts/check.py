#!/usr/bin/env python3
"""Checks the devdb chart without a cluster: helm lint (strict), then render it with the default
values and with every option on, and validate each manifest against the official Kubernetes JSON
schemas (kubernetes-validate --strict). Needs: pip install helm-python-sdk kubernetes-validate.
Exits non-zero on any finding."""

import pathlib
import subprocess
import sys
import tempfile

import helm_python as helm

CHART = pathlib.Path(__file__).resolve().parent / "devdb"
VARIANTS = {
    "defaults": {},
    "everything-on": {
        "tls": {"certManager": {"enabled": True}},
        "controller": {"tokensSecret": "devdb-tokens"},
        "loadBalancers": {
            "api": {"sslCertificateArn": "arn:aws:acm:eu-west-1:123456789012:certificate/abc"},
            "database": {"sourceRanges": ["203.0.113.0/24"]},
        },
        "proxy": {"replicas": 3, "proxyProtocol": False},
    },
}


def controller_env() -> int:
    """Prints the environment variable names the chart gives the controller, one per line."""
    chart = helm.Chart.load(CHART)
    for path, text in chart.render({}, name="devdb", namespace="devdb", is_install=True).items():
        if path.endswith("templates/controller.yaml"):
            for line in text.splitlines():
                line = line.strip()
                if line.startswith("- { name: ") or line.startswith("- name: "):
                    name = line.split("name: ", 1)[1].split(",", 1)[0].strip()
                    if name.isupper():  # environment variables, not containers or ports
                        print(name)
    return 0


def main() -> int:
    if sys.argv[1:] == ["--controller-env"]:
        return controller_env()
    failures = 0
    report = helm.lint(str(CHART), strict=True, kube_version="v1.33.0")
    for message in report.get("messages", []):
        print(f"lint: severity {message['severity']} {message['path']}: {message['error']}")
        failures += message["severity"] >= 2
    failures += len(report.get("errors") or [])

    chart = helm.Chart.load(CHART)
    crds = chart.crds
    print(f"chart {chart.name} {chart.version}: {len(crds)} CRDs")
    if len(crds) != 2:
        failures += 1
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
            notes = next((t for p, t in manifests.items() if p.endswith("NOTES.txt")), "")
            if "kubectl" not in notes:
                print(f"{variant}: NOTES.txt does not say how to connect")
                failures += 1
            kinds = "\n".join(manifests.values())
            if variant == "defaults" and "kind: StorageClass" not in kinds:
                print("defaults: no StorageClass for the volumes (a stock EKS cluster has none that snapshots)")
                failures += 1
            result = subprocess.run(["kubernetes-validate", "--strict", *files], capture_output=True, text=True)
            print(f"{variant}: {len(files)} manifests")
            print(result.stdout + result.stderr, end="")
            failures += result.returncode != 0
    print("chart check:", "FAILED" if failures else "ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
