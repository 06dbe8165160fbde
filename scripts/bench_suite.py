"""Times the whole test suite as CI runs it, on this machine, and records it for the testing page.

    python scripts/bench_suite.py             # runs python -m pytest -q, prints one JSON line
    python scripts/bench_suite.py --publish   # also writes docs/benchmarks/results/testing.json

The figure is the wall time of one `python -m pytest -q` in this checkout's environment (the
install that `bash scripts/test.sh` does first is not counted), with pytest's own count of passed
and skipped tests and its slowest tests. One table per machine kind (benchkit.CPU_KINDS),
so that each kind keeps its own latest figure. Run it with nothing else heavy on the machine.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time

import benchkit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchkit.add_publish_argument(parser)
    parser.add_argument("--slowest", type=int, default=5, help="how many of the slowest tests to record")
    args = parser.parse_args()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=0"],
                          cwd=benchkit.ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    last_line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    counts = {kind: int(number) for number, kind in re.findall(r"(\d+) (passed|skipped|failed|error)", last_line)}
    slowest = re.findall(r"^([\d.]+)s (?:call|setup)\s+(\S+)", done.stdout, re.M)[:args.slowest]
    result = {"benchmark": "suite", "machine": benchkit.machine(), "seconds": round(seconds),
              "passed": counts.get("passed", 0), "skipped": counts.get("skipped", 0),
              "failed": counts.get("failed", 0) + counts.get("error", 0),
              "slowest": [{"test": name, "seconds": float(time_s)} for time_s, name in slowest]}
    print(json.dumps(result))
    if done.returncode != 0:
        raise SystemExit(f"the suite failed; nothing recorded:\n{done.stdout[-3000:]}")
    if args.publish:
        _, (_, _, kind) = benchkit.cpu_info()
        rows = [{"what": "whole suite", "seconds": result["seconds"],
                 "tests": f"{result['passed']} passed, {result['skipped']} skipped"}]
        rows += [{"what": f"slowest: {item['test']}", "seconds": item["seconds"], "tests": ""}
                 for item in result["slowest"]]
        columns = [{"key": "what", "label": "what"}, {"key": "seconds", "label": "seconds", "format": "{:.0f}"},
                   {"key": "tests", "label": "tests"}]
        benchkit.publish("testing", [{"name": kind, "columns": columns, "rows": rows}])


if __name__ == "__main__":
    main()
