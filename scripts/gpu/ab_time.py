"""Time ssmkit's own rows of `ssmkit bench` workloads for the tree this is run from, for A/B runs of copies of it.

    cd COPY_OF_THE_TREE && python3 /path/to/ab_time.py --tag variant -w W2 -w W6 --lengths 1024 4096

Each copy runs in its own process (its own `ssmkit` and Triton cache), so two trees alternated in one device call
give comparable rows. Peers are not loaded and the ceilings are measured once per process (the rows need them).
Prints one line per row: tag, workload, impl, mode, L, median ms, peak GiB.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.getcwd())  # the tree under test, not the one this script lies in


def main() -> None:
    from ssmkit.bench.gpu import GpuPeers, cases_for, check_lengths, require_cuda
    from ssmkit.bench.gpu.ceilings import measure
    from ssmkit.bench.gpu.common import DeviceTimer, run_case

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tag", required=True, help="name printed on every row (which tree)")
    parser.add_argument("-w", "--workload", action="append", required=True, help="workload id, repeatable")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--impl", default="ssmkit", help="keep rows whose impl starts with this")
    parser.add_argument("--mode", default="", help="keep only this mode (fwd or fwd+bwd); empty: both")
    args = parser.parse_args()
    require_cuda(args.workload)
    check_lengths(args.lengths)
    timer = DeviceTimer()
    ceilings = measure(timer)
    peers = GpuPeers(None, enabled=False)
    for workload in args.workload:
        for case in cases_for(workload, args.lengths, peers):
            if not case.impl.startswith(args.impl) or (args.mode and case.mode != args.mode):
                continue
            row = run_case(case, timer, ceilings)
            print(
                f"{args.tag} {workload} {row['impl']!r} {row['mode']} L={row.get('L')} "
                f"ms={row.get('median_ms')} peak_gib={row.get('peak_gib')} {(row.get('note') or '')[:60]}",
                flush=True,
            )


if __name__ == "__main__":
    main()
