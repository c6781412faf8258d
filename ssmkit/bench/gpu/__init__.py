"""The guide's GPU workloads W1-W6 (section 5), measured with the in-run ceilings and the peers in one run.

    rows, summary, ceilings = run(["W1", "W2"], [1024, 4096], GpuPeers(".peers"))

One file per workload (scan W1, ssd W2, attention W3, conv W4, decode W5, blocks W6); each returns `Case`s that
`common.run_case` measures into rows for `ssmkit.bench.report`.
"""

from __future__ import annotations

from collections.abc import Callable

from .common import TOKENS, Case, Ceilings, DeviceTimer, require_cuda, run_case
from .peers_gpu import GpuPeers
from .summary import summarize

GPU_WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6")


def check_lengths(lengths: list[int]) -> None:
    bad = [n for n in lengths if n <= 0 or TOKENS % n]
    if bad:
        raise ValueError(
            f"--lengths: GPU workloads keep B * L = {TOKENS:,} tokens, so L must divide {TOKENS}; got {bad}"
        )


def cases_for(workload: str, lengths: list[int], peers: GpuPeers) -> list[Case]:
    from . import attention, blocks, conv, decode, scan, ssd

    if workload == "W1":
        return scan.cases(lengths, peers)
    if workload == "W2":
        return ssd.cases(lengths, peers)
    if workload == "W3":
        return attention.cases(lengths)
    if workload == "W4":
        return conv.cases()
    if workload == "W5":
        return decode.cases(peers)
    if workload == "W6":
        return blocks.cases(peers)
    raise ValueError(f"workload: expected one of {GPU_WORKLOADS}, got {workload!r}")


def describe(row: dict) -> str:
    where = " ".join(f"{k}={row[k]}" for k in ("L", "batch") if row.get(k) is not None)
    head = f"  {row['workload']} {row['impl']} {row.get('mode', '')} {where}:"
    if row.get("median_ms") is None:
        return f"{head} {row.get('note', '')}"
    target = f" (target {row['target_ms']}: {row['met']})" if row.get("target_ms") is not None else ""
    return f"{head} {row['median_ms']} ms{target}"


def run(
    workloads: list[str],
    lengths: list[int],
    peers: GpuPeers,
    *,
    log: Callable[[str], None] = print,
    on_rows: Callable[[list[dict], Ceilings], None] | None = None,
    timer: DeviceTimer | None = None,
) -> tuple[list[dict], list[str], Ceilings]:
    """Measure the ceilings, then every case of each workload in order; `on_rows` sees the rows after each."""
    require_cuda(workloads)
    check_lengths(lengths)
    from .ceilings import measure

    timer = timer or DeviceTimer()
    ceilings = measure(timer)
    c = ceilings.as_dict()
    log(
        f"  ceilings: copy {c['copy_TBps']} TB/s, bf16 matmul {c['matmul_TFLOPs']} TFLOP/s, "
        f"exp2 {c['exp_Tper_s']}e12/s ({c['exp_source']})"
    )
    rows: list[dict] = []
    for workload in workloads:
        for case in cases_for(workload, lengths, peers):
            row = run_case(case, timer, ceilings)
            log(describe(row))
            rows.append(row)
        if on_rows is not None:
            on_rows(rows, ceilings)
    return rows, summarize(rows), ceilings


__all__ = ["GPU_WORKLOADS", "GpuPeers", "check_lengths", "require_cuda", "run"]
