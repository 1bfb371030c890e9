"""Run the tests marked ``learning`` over several seeds and torch thread counts; print the pass table and margins.

A learning test must pass on any x86 CPU the pinned stack supports, not on one lucky trajectory. This runs the real
tests (``pytest -m learning``) once per (seed, threads) cell, with ``AVIDZOO_TEST_SEED`` and ``AVIDZOO_TEST_THREADS``
set (tests/conftest.py reads them), and reads each test's recorded margins (``value>=threshold``) from pytest's junit
XML. Cells run side by side as long as their threads fit the cores this process may use.

    python .ci/sweep_learning.py                       # seeds 0-4, threads 1 and 2
    python .ci/sweep_learning.py --seeds 0 1 --threads 2 -k pretraining
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_cells(cells: list[tuple[int, int]], out: Path, keyword: str | None) -> dict[tuple[int, int], Path]:
    cores = len(os.sched_getaffinity(0))
    pending, running, done = list(cells), {}, {}
    while pending or running:
        # Start cells while their torch threads fit the cores (one cell at least).
        while pending and (not running or sum(t for _, t in running) + pending[0][1] <= cores):
            seed, threads = pending.pop(0)
            xml = out / f"seed{seed}-threads{threads}.xml"
            env = {**os.environ, "AVIDZOO_TEST_SEED": str(seed), "AVIDZOO_TEST_THREADS": str(threads),
                   "AVIDZOO_DISABLE_PROGRESS": "1"}
            # Each cell gets its own pytest temp folder, removed when the cell ends: a pretraining test writes about
            # 2 GB of checkpoints, and pytest would keep three cells' worth.
            cmd = [sys.executable, "-m", "pytest", "-m", "learning", "-q", "-n", "0", "-p", "no:cacheprovider",
                   f"--junitxml={xml}", f"--basetemp={out / f'tmp-seed{seed}-threads{threads}'}",
                   *(["-k", keyword] if keyword else [])]
            log = open(out / f"seed{seed}-threads{threads}.log", "w")  # noqa: SIM115 (closed when the cell ends)
            running[(seed, threads)] = (subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log), log,
                                        time.time())
        time.sleep(1)
        for cell, (proc, log, t0) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                done[cell] = out / f"seed{cell[0]}-threads{cell[1]}.xml"
                shutil.rmtree(out / f"tmp-seed{cell[0]}-threads{cell[1]}", ignore_errors=True)
                print(f"seed {cell[0]}, {cell[1]} thread(s): exit {proc.returncode} in {time.time() - t0:.0f} s",
                      flush=True)
                del running[cell]
    return done


def read_cell(xml: Path) -> dict[str, tuple[str, dict[str, str]]]:
    """``{test id: (outcome, {margin name: "value>=threshold"})}``."""
    results = {}
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as e:  # a cell that died mid-write (out of disk, killed): no results, reported as missing
        print(f"{xml}: unreadable ({e})")
        return results
    for case in root.iter("testcase"):
        name = case.get("name")
        outcome = "FAIL" if case.find("failure") is not None or case.find("error") is not None else \
            "skip" if case.find("skipped") is not None else "pass"
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        results[name] = (outcome, props)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("-k", dest="keyword", help="pytest -k expression to run a subset")
    p.add_argument("--out", help="folder for the junit XML and logs (default: a temporary one)")
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="sweep-"))
    out.mkdir(parents=True, exist_ok=True)
    cells = [(s, t) for t in sorted(args.threads) for s in args.seeds]
    done = run_cells(cells, out, args.keyword)
    table = {cell: results for cell, xml in done.items() if xml.is_file() and (results := read_cell(xml))}
    tests = sorted({name for cell in table.values() for name in cell})
    failed = 0
    print(f"\n{'test':<72} {'margin':<22} " + " ".join(f"s{s}/t{t}" for s, t in cells))
    for name in tests:
        margins = sorted({m for cell in table.values() if name in cell for m in cell[name][1]}) or [""]
        for m in margins:
            row = []
            for cell in cells:
                outcome, props = table.get(cell, {}).get(name, ("-", {}))
                failed += outcome == "FAIL" and m == margins[0]
                row.append(props.get(m, outcome).split(">=")[0] if m else outcome)
            threshold = next((c[name][1][m].split(">=")[1] for c in table.values() if name in c and m in c[name][1]),
                             "")
            label = f"{m} >= {threshold}" if m else ""
            print(f"{name[:72]:<72} {label:<22} " + " ".join(f"{v:>6}" for v in row))
    missing = [c for c in cells if c not in table]
    print(f"\n{len(cells)} cells, {len(tests)} tests, {failed} failed test runs"
          + (f", no result for {missing}" if missing else "") + f"; logs and XML in {out}")
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
