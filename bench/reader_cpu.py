"""CPU seconds of the reading process alone (parse, records, prepare), in-process, for trees side by side.

    python -m bench.reader_cpu --trees OLD,NEW --rounds 3 FILE [FILE...]

Each round runs every tree once per file, alternated, in a fresh interpreter (`time.process_time()` around
the read, imports excluded); it also prints a SHA-256 of everything the reading process would send to the
loader (the repr of its batches): equal digests mean the same prepared foyers, value for value.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import gc, hashlib, json, sys, time
from pathlib import Path
from app.flux.envelope import FluxLimits
from app.flux.pipeline import InlineSource
gc.disable()  # as the reading process runs
out = {}
for name in sys.argv[1:]:
    src = InlineSource(Path(name), 2000, b"k" * 32, FluxLimits())
    digest = hashlib.sha256()
    t0 = time.process_time()
    for batch in src.batches():
        digest.update(repr(batch).encode())
    out[name] = (time.process_time() - t0, digest.hexdigest())
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trees", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    trees = args.trees.split(",")
    cpu: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for tree in trees if r % 2 == 0 else trees[::-1]:
            res = subprocess.run(
                [sys.executable, "-c", CHILD, *args.files],
                cwd=tree,
                env={"PYTHONPATH": tree, "PATH": "/usr/bin:/bin"},
                capture_output=True,
                text=True,
                check=True,
            )
            for name, (seconds, digest) in json.loads(res.stdout).items():
                cpu.setdefault((tree, name), []).append(seconds)
                print(f"round {r + 1} {tree} {name}: {seconds:.2f} s CPU, sha256 {digest[:16]}", flush=True)
    for (tree, name), values in cpu.items():
        print(f"{tree} {name}: median {statistics.median(values):.2f} s of {[round(v, 2) for v in values]}")


if __name__ == "__main__":
    main()
