"""The guide's standard workloads (section 5): W0, on the CPU, is here; the GPU workloads W1-W6 are in `gpu/`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import torch

from ..models import LanguageModel, ModelConfig
from . import peers
from .timing import current_rss_bytes, peak_rss_bytes, time_cpu

W0_TARGET_MS = 450.0  # at L = 2048, for each of Mamba-1 and Mamba-2


def _w0_config(letter: str) -> ModelConfig:
    return ModelConfig(d_model=768, n_layer=2, vocab_size=1024, layer_pattern=letter)


def _forward_rows(name: str, model: torch.nn.Module, lengths: list[int], note: str, repeats: int) -> list[dict]:
    rows = []
    for length in lengths:
        ids = torch.randint(0, 1024, (1, length))
        with torch.inference_mode():
            timing = time_cpu(lambda ids=ids: model(ids), warmup=1, repeats=repeats)
        target = W0_TARGET_MS if length == 2048 and name.startswith("ssmkit") else None
        rows.append(
            {
                "workload": "W0",
                "impl": name,
                "L": length,
                "batch": 1,
                "median_ms": round(timing.median_ms, 2),
                "min_ms": round(timing.min_ms, 2),
                "repeats": timing.repeats,
                "note": note,
                "target_ms": target,
                "met": None if target is None else ("yes" if timing.median_ms <= target else "no"),
            }
        )
    return rows


def w0(
    lengths: list[int], *, with_peers: bool = True, repeats: int = 5, log: Callable[[str], None] = print
) -> list[dict]:
    """2-layer LM, d_model 768, vocab 1024, batch 1, fp32 forward on the CPU (threads as set by the caller)."""
    torch.manual_seed(0)
    rows = []
    builders = [
        ("ssmkit Mamba", lambda: LanguageModel(_w0_config("M")).eval(), "backend=auto (torch chunked scan)"),
        ("ssmkit Mamba2", lambda: LanguageModel(_w0_config("D")).eval(), "backend=auto (torch chunked SSD)"),
    ]
    if with_peers:
        for build in (peers.transformers_mamba, peers.transformers_mamba2, peers.mambapy_mamba):
            peer = build(768, 2, 1024)
            if peer.model is None:
                log(f"  peer {peer.name}: {peer.note}")
                rows.append({"workload": "W0", "impl": peer.name, "note": peer.note})
                continue
            builders.append((peer.name, lambda m=peer.model: m, peer.note))
    for name, build, note in builders:
        log(f"  W0 {name} ...")
        rows += _forward_rows(name, build(), lengths, note, repeats)
    return rows


def long_mamba_layer_child(length: int) -> None:
    """Run in a fresh process: one Mamba-1 layer (d_model 768) forward at batch 1; prints JSON with peak memory."""
    from ..layers.mamba import Mamba

    torch.manual_seed(0)
    layer = Mamba(768).eval()
    x = torch.randn(1, length, 768)
    before = current_rss_bytes()
    with torch.inference_mode():
        timing = time_cpu(lambda: layer(x), warmup=0, repeats=1)
    print(
        json.dumps(
            {
                "workload": "W0-long",
                "impl": "ssmkit Mamba layer",
                "L": length,
                "batch": 1,
                "median_ms": round(timing.median_ms, 1),
                "peak_rss_gib": round(peak_rss_bytes() / 2**30, 3),
                "rss_before_forward_gib": round(before / 2**30, 3),
                "input_gib": round(x.numel() * 4 / 2**30, 3),
            }
        )
    )


def w0_long(length: int = 65536, threads: int = 2) -> dict:
    code = (
        f"import torch; torch.set_num_threads({threads}); "
        f"from ssmkit.bench.workloads import long_mamba_layer_child; long_mamba_layer_child({length})"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {
            "workload": "W0-long",
            "impl": "ssmkit Mamba layer",
            "L": length,
            "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}",
        }
    return json.loads(done.stdout.strip().splitlines()[-1])
