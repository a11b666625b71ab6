"""Fault trials: concurrent imports, and imports and training runs killed at random moments.

    .venv/bin/python benchmarks/faults.py                  # default counts, writes faults.json
    .venv/bin/python benchmarks/faults.py --concurrent 20 --imports 10 --trainings 3

Every trial runs the real ``atoken`` CLI in child processes (:mod:`atoken.testing.faults`):

(concurrent) two ``atoken data import images`` of different folders into one store, started
             together, without waiting (the second is refused by the store's lock, or runs
             after) and with ``--wait 60`` (the second queues behind the first): every sample
             of every import that exited 0 must be in the store, and verify clean.
(import)     an import SIGKILLed at a random moment after its first commit, then run again.
(training)   ``atoken train`` SIGKILLed twice at random moments and resumed each time; its
             final weights must be bit-identical to the same run never interrupted.

Printed per kind: runs, kills, samples expected, samples found, lost, checksum failures,
refused (by the lock) and mismatched runs. All of lost, checksum failures and mismatched must
be 0; the script exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import attrs

from atoken.testing.faults import Trial, concurrent_imports, killed_import, killed_training

HERE = Path(__file__).resolve().parent
COLUMNS = ("runs", "kills", "expected", "found", "lost", "checksum_failures", "refused")


def _repeat(kind: str, n: int, trial) -> Trial:
    total = Trial(0, 0, 0, 0, 0, 0)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            total = total + trial(Path(tmp) / f"{kind}{i}", i)
            print(f"  {kind} {i + 1}/{n}: {total}", file=sys.stderr, flush=True)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrent", type=int, default=10, help="trials per wait setting")
    parser.add_argument("--imports", type=int, default=5)
    parser.add_argument("--trainings", type=int, default=2)
    parser.add_argument("--json", type=Path, default=HERE / "faults.json")
    args = parser.parse_args()
    results = {
        "concurrent, no wait": _repeat(
            "nowait", args.concurrent, lambda d, i: concurrent_imports(d, wait=0.0, seed=i)
        ),
        "concurrent, --wait 60": _repeat(
            "wait", args.concurrent, lambda d, i: concurrent_imports(d, wait=60.0, seed=i)
        ),
        "killed import": _repeat("import", args.imports, lambda d, i: killed_import(d, seed=i)),
        "killed training": _repeat(
            "train", args.trainings, lambda d, i: killed_training(d, seed=i)
        ),
    }
    head = f"{'trial':24s}" + "".join(f"{c:>18s}" for c in (*COLUMNS, "mismatched"))
    print(head)
    for name, t in results.items():
        values = (*(getattr(t, c) for c in COLUMNS), t.mismatched)
        print(f"{name:24s}" + "".join(f"{v:>18d}" for v in values))
    bad = sum(t.lost + t.checksum_failures + t.mismatched for t in results.values())
    print("verdict:", "nothing lost" if bad == 0 else f"FAILED ({bad} lost/corrupt/mismatched)")
    args.json.write_text(
        json.dumps({k: attrs.asdict(v) for k, v in results.items()}, indent=2) + "\n"
    )
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
