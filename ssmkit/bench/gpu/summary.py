"""The run's summary lines: crossover lengths against attention, speed and memory against the peers."""

from __future__ import annotations

from .common import crossover, ratio_lines


def _peak(rows: list[dict], impl: str) -> float | None:
    for r in rows:
        if r["workload"] == "W6" and r["impl"] == impl and r.get("mode") == "fwd+bwd":
            return r.get("peak_gib")
    return None


# mamba_ssm's block fwd+bwd peak in the guide's H200 run (W6), for runs where its module cannot be built
GUIDE_PEAK_GIB = {"Mamba": 5.98, "Mamba2": 6.98}

# the guide's targets that compare two implementations rather than a time
CROSSOVER_TARGET = {("W2", "ssmkit triton"): "target: faster than W3 attention from L = 2048 on"}
RATIO_TARGET = {
    ("W1", "mamba_ssm selective_scan_fn"): "target: over 3.5x",
    ("W2", "mamba_ssm chunk_scan_combined"): "target: over 2x",
}


def summarize(rows: list[dict]) -> list[str]:
    lines = []
    for workload, impl in (("W1", "ssmkit triton"), ("W2", "ssmkit triton"), ("W2", "mamba_ssm chunk_scan_combined")):
        for mode in ("fwd", "fwd+bwd"):
            line = crossover(rows, (workload, impl), ("W3", "torch SDPA"), mode)
            if line:
                target = CROSSOVER_TARGET.get((workload, impl))
                lines.append(f"{line} ({target})" if target else line)
    for workload, ours, peer in (
        ("W1", "ssmkit triton", "mamba_ssm selective_scan_fn"),
        ("W2", "ssmkit triton", "mamba_ssm chunk_scan_combined"),
        ("W2", "ssmkit triton", "fla chunk_simple_gla"),
        ("W4", "ssmkit causal_conv1d", "F.conv1d + silu"),
        ("W5", "ssmkit selective_scan_step", "mamba_ssm state_update (M1)"),
        ("W5", "ssmkit ssd_step", "mamba_ssm state_update (M2)"),
        ("W6", "ssmkit Mamba", "mamba_ssm Mamba"),
        ("W6", "ssmkit Mamba2", "mamba_ssm Mamba2"),
    ):
        target = RATIO_TARGET.get((workload, peer))
        lines += [f"{line} ({target})" if target else line for line in ratio_lines(rows, workload, ours, peer)]
    for kind in ("Mamba", "Mamba2"):
        theirs, source = _peak(rows, f"mamba_ssm {kind}"), "mamba_ssm"
        if theirs is None:  # not measurable in this run: the guide's H200 figure
            theirs, source = GUIDE_PEAK_GIB[kind], "mamba_ssm (guide's H200 run)"
        for impl in (f"ssmkit {kind}", f"ssmkit {kind} unfused"):
            ours = _peak(rows, impl)
            if ours is not None:
                verdict = "met" if ours <= theirs else "not met"
                lines.append(
                    f"W6 {kind} fwd+bwd peak memory: {impl} {ours} GiB, {source} {theirs} GiB "
                    f"(target: no more than mamba_ssm's): {verdict}"
                )
    return lines
