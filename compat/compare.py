#!/usr/bin/env python3
"""Compare JUnit XML results of one test suite run directly and through devdb-proxy.

    python3 compat/compare.py DIRECT.xml PROXY.xml [--retry RETRY.xml ...]
                              [--min-direct-pass-ratio 0.8] [--list-regressions]

Prints the counts of each run, how each test's outcome moved from the direct run to the proxy
run, and every test that passes directly but does not pass through the proxy (failed, errored,
skipped or missing there) with the error it gave through the proxy.

--retry names results of re-running, through the proxy, the tests that failed there: a test that
passes directly, fails in the proxy run and passes in a retry is reported as FLAKY through the
proxy (listed, with its first error) but does not fail the comparison.

Exit status: 1 when any test passes directly and never through the proxy, or when the direct run
passed fewer than --min-direct-pass-ratio of the tests it collected (a broken setup must not pass
trivially); 0 otherwise. With --list-regressions it prints only the pytest node ids of the tests
that pass directly and have not passed through the proxy yet (for a retry), and exits 0.
Standard library only.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass

OUTCOMES = ("passed", "failed", "skipped")
SEVERITY = {"passed": 0, "skipped": 1, "failed": 2}


@dataclass
class Result:
    outcome: str  # one of OUTCOMES ("failed" includes errors)
    message: str  # the first failure/error/skip message, "" when passed


def _message(elem: ET.Element) -> str:
    msg = (elem.get("message") or "").strip()
    if not msg:
        text = (elem.text or "").strip()
        msg = text.splitlines()[-1].strip() if text else elem.tag
    # pytest puts the whole exception text in the message: keep its first lines.
    lines = [line.strip() for line in msg.splitlines() if line.strip()]
    short = " | ".join(lines[:3])[:400]
    # Where in the test it failed: the last traceback line in the tests themselves.
    where = [
        line.split(": in ")[0]
        for line in (elem.text or "").splitlines()
        if line.startswith("tests/") and ": in " in line
    ]
    return f"{short} (at {where[-1]})" if where else short


def load(path: str) -> tuple[dict[str, Result], float]:
    """pytest node id -> Result, and the suite time recorded in the file."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        sys.exit(f"compare: cannot read {path}: {e}")
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    results: dict[str, Result] = {}
    total = 0.0
    for suite in suites:
        total += float(suite.get("time") or 0)
        for case in suite.iter("testcase"):
            test_id = node_id(case.get("classname", ""), case.get("name", ""))
            problems = case.findall("failure") + case.findall("error")
            skipped = case.findall("skipped")
            if problems:
                res = Result("failed", _message(problems[0]))
            elif skipped:
                res = Result("skipped", _message(skipped[0]))
            else:
                res = Result("passed", "")
            prev = results.get(test_id)
            # Reported twice (e.g. an error in teardown after a pass): the worse outcome counts.
            if prev is None or SEVERITY[res.outcome] > SEVERITY[prev.outcome]:
                results[test_id] = res
    return results, total


def node_id(classname: str, name: str) -> str:
    """JUnit classname `tests.test_x.TestY` + name -> pytest node id `tests/test_x.py::TestY::name`.

    asyncpg's tests are all methods of classes; a module-level test keeps the dotted form.
    """
    parts = classname.split(".")
    if len(parts) >= 2 and parts[-2].startswith("test"):
        return f"{'/'.join(parts[:-1])}.py::{parts[-1]}::{name}"
    return f"{classname}::{name}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("direct", help="JUnit XML of the run directly against PostgreSQL")
    ap.add_argument("proxy", help="JUnit XML of the run through devdb-proxy")
    ap.add_argument("--retry", action="append", default=[], metavar="XML",
                    help="JUnit XML of a retry through the proxy (repeatable)")
    ap.add_argument("--min-direct-pass-ratio", type=float, default=0.8,
                    help="fail unless the direct run passed this share of its tests (0.8)")
    ap.add_argument("--list-regressions", action="store_true",
                    help="print the node ids still failing only through the proxy, exit 0")
    args = ap.parse_args()

    direct, direct_time = load(args.direct)
    proxy, proxy_time = load(args.proxy)
    retries = [load(path)[0] for path in args.retry]

    def passed_in_retry(t: str) -> bool:
        return any(r.get(t, Result("missing", "")).outcome == "passed" for r in retries)

    not_passing = [
        t for t, d in sorted(direct.items())
        if d.outcome == "passed" and (t not in proxy or proxy[t].outcome != "passed")
    ]
    flaky = [t for t in not_passing if passed_in_retry(t)]
    regressions = [t for t in not_passing if t not in flaky]

    if args.list_regressions:
        for t in regressions:
            print(t)
        return 0

    def counts(results: dict[str, Result]) -> Counter[str]:
        return Counter(r.outcome for r in results.values())

    dc, pc = counts(direct), counts(proxy)
    print(f"{'':<22}{'direct':>10}{'proxy':>10}")
    print(f"{'collected':<22}{len(direct):>10}{len(proxy):>10}")
    for outcome in OUTCOMES:
        label = "failed (incl. errors)" if outcome == "failed" else outcome
        print(f"{label:<22}{dc[outcome]:>10}{pc[outcome]:>10}")
    print(f"{'pytest time (s)':<22}{direct_time:>10.1f}{proxy_time:>10.1f}")

    print()
    print("outcome, direct -> proxy (first run)")
    moves = Counter(
        (d.outcome, proxy[t].outcome if t in proxy else "missing") for t, d in direct.items()
    )
    for (d_out, p_out), n in sorted(moves.items()):
        print(f"  {d_out:>8} -> {p_out:<8}{n:>6}")
    only_proxy = len(set(proxy) - set(direct))
    if only_proxy:
        print(f"  {'(absent)':>8} -> {'':<8}{only_proxy:>6}  (only in the proxy run)")

    direct_failed = [t for t, d in sorted(direct.items()) if d.outcome == "failed"]
    if direct_failed:
        print()
        print(f"failing directly (not held against the proxy): {len(direct_failed)}")
        for t in direct_failed:
            p = proxy.get(t)
            print(f"  {t}\n      direct: {direct[t].message}")
            if p is not None and p.outcome == "passed":
                print("      (passes through the proxy)")

    if flaky:
        print()
        print(f"FLAKY through the proxy (failed there, passed on a retry): {len(flaky)}")
        for t in flaky:
            print(f"  {t}\n      proxy, first run: {proxy[t].message if t in proxy else 'missing'}")

    status = 0
    print()
    if regressions:
        status = 1
        print(f"PASS directly, NOT through the proxy: {len(regressions)}")
        for t in regressions:
            p = proxy.get(t)
            what = "missing from the proxy run" if p is None else f"{p.outcome}: {p.message}"
            print(f"  {t}\n      proxy {what}")
    else:
        print("every test that passes directly also passes through the proxy")

    total = len(direct)
    ratio = dc["passed"] / total if total else 0.0
    if ratio < args.min_direct_pass_ratio:
        status = 1
        print(
            f"\nthe direct run passed {dc['passed']} of {total} tests ({ratio:.0%}), under "
            f"{args.min_direct_pass_ratio:.0%}: the setup is broken, nothing was compared"
        )

    # One closing line in the form CI runners summarise: tests that pass both ways, and the
    # tests that pass directly but never through the proxy.
    both = dc["passed"] - len(regressions)
    if flaky:
        print(f"({len(flaky)} of the passed needed a retry through the proxy)")
    print(f"compat: {both} passed, {len(regressions)} failed")
    return status


if __name__ == "__main__":
    sys.exit(main())
