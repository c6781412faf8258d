"""W5: decoding. One step of each layer type at batch 1, 16 and 64 (CUDA-graph replays), attention over a 4K
KV cache, and whole-model tokens/s through `LanguageModel.step` captured in a CUDA graph.

Per-layer shapes are W1's and W2's: a Mamba-1 step is d = 4096, n = 16 (state (b, d, n) fp32); a Mamba-2 step is
h = 64, p = 64, n = 128 (state (b, h, p, n) fp32); attention decode is one query of 16 heads x 128 over 4,096
cached keys and values (bf16). Bytes counted: the state read and written (fp32) plus the token's inputs and
output, or the KV cache read once. Whole-model target (guide): within 2x of reading the weights once at the
measured copy bandwidth; its bytes are the weights once plus every layer's state read and written.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import common
from .common import BF16, FP32, Case, Ceilings, auto_backends
from .peers_gpu import GpuPeers

BATCHES = (1, 16, 64)
M1_D, M1_N = 4096, 16
M2_H, M2_P, M2_N = 64, 64, 128
KV_HEADS, KV_DIM, KV_CONTEXT = 16, 128, 4096
MODELS = ("mamba-1.4b", "mamba2-1.3b")


def m1_inputs(batch: int) -> dict:
    gen = torch.Generator(device=common.DEVICE).manual_seed(0)
    bf = torch.bfloat16

    def randn(*shape, dtype=bf, scale=1.0, shift=0.0):
        return (torch.randn(*shape, device=common.DEVICE, generator=gen) * scale + shift).to(dtype)

    return {
        "u_t": randn(batch, M1_D),
        "dt_t": randn(batch, M1_D, scale=0.5, shift=-2.0),
        "A": -(torch.rand(M1_D, M1_N, device=common.DEVICE, generator=gen) * 15 + 1),
        "B_t": randn(batch, 1, M1_N),
        "C_t": randn(batch, 1, M1_N),
        "state": randn(batch, M1_D, M1_N, dtype=torch.float32),
        "D": randn(M1_D, dtype=torch.float32),
        "z_t": randn(batch, M1_D),
        "dt_bias": randn(M1_D, dtype=torch.float32, scale=0.1),
    }


def m2_inputs(batch: int) -> dict:
    gen = torch.Generator(device=common.DEVICE).manual_seed(0)
    bf = torch.bfloat16
    return {
        "x_t": torch.randn(batch, M2_H, M2_P, device=common.DEVICE, generator=gen).to(bf),
        "dt_t": (torch.randn(batch, M2_H, device=common.DEVICE, generator=gen) * 0.5 - 2.0).to(bf),
        "A": -(torch.rand(M2_H, device=common.DEVICE, generator=gen) * 15 + 1),
        "B_t": torch.randn(batch, 1, M2_N, device=common.DEVICE, generator=gen).to(bf),
        "C_t": torch.randn(batch, 1, M2_N, device=common.DEVICE, generator=gen).to(bf),
        "state": torch.randn(batch, M2_H, M2_P, M2_N, device=common.DEVICE, generator=gen),
        "D": torch.randn(M2_H, device=common.DEVICE, generator=gen),
        "dt_bias": torch.randn(M2_H, device=common.DEVICE, generator=gen) * 0.5,
    }


def _ssmkit_m1(batch: int):
    from ...ops import selective_scan_step

    def setup():
        x = m1_inputs(batch)
        return lambda: selective_scan_step(**x, dt_softplus=True)

    return setup


def _ssmkit_m2(batch: int):
    from ...ops import ssd_step

    def setup():
        x = m2_inputs(batch)
        return lambda: ssd_step(**x, dt_softplus=True)

    return setup


def _mamba_m1(fn, batch: int):
    def setup():
        x = m1_inputs(batch)
        args = (x["state"], x["u_t"], x["dt_t"], x["A"], x["B_t"][:, 0], x["C_t"][:, 0])
        return lambda: fn(*args, D=x["D"], z=x["z_t"], dt_bias=x["dt_bias"], dt_softplus=True)

    return setup


def _mamba_m2(fn, batch: int):
    # as mamba_ssm's Mamba2.step calls it: per-head scalars broadcast over headdim (and A over the state)
    def setup():
        x = m2_inputs(batch)
        A = x["A"][:, None, None].expand(M2_H, M2_P, M2_N)
        dt = x["dt_t"][:, :, None].expand(batch, M2_H, M2_P)
        D = x["D"][:, None].expand(M2_H, M2_P)
        dt_bias = x["dt_bias"][:, None].expand(M2_H, M2_P)
        args = (x["state"], x["x_t"], dt, A, x["B_t"], x["C_t"])
        return lambda: fn(*args, D=D, dt_bias=dt_bias, dt_softplus=True)

    return setup


def _attention(batch: int):
    def setup():
        gen = torch.Generator(device=common.DEVICE).manual_seed(0)
        shape = (batch, KV_HEADS, KV_CONTEXT, KV_DIM)
        q = torch.randn(batch, KV_HEADS, 1, KV_DIM, device=common.DEVICE, generator=gen, dtype=torch.bfloat16)
        k = torch.randn(*shape, device=common.DEVICE, generator=gen, dtype=torch.bfloat16)
        v = torch.randn(*shape, device=common.DEVICE, generator=gen, dtype=torch.bfloat16)
        return lambda: F.scaled_dot_product_attention(q, k, v)

    return setup


def _model_sizes(name: str, batch: int) -> tuple[int, int]:
    """(weight bytes, state bytes) of the bf16 model, from a build on the meta device (no memory, no init)."""
    from ...models import LanguageModel, ModelConfig

    model = LanguageModel(ModelConfig.from_name(name), device="meta", dtype=torch.bfloat16)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return weights, model.init_state(batch, device="meta").nbytes()


def _skip_id_check(*_args) -> None:
    """Stands in for LanguageModel._check_ids, whose range check reads the ids on the host: a CUDA graph cannot."""


def _model(name: str, batch: int):
    from ...models import LanguageModel, ModelConfig

    def setup():
        cfg = ModelConfig.from_name(name)
        torch.manual_seed(0)
        model = LanguageModel(cfg, device=common.DEVICE, dtype=torch.bfloat16).eval()
        model._check_ids = _skip_id_check  # this instance only; the ids below are in range by construction
        state = model.init_state(batch)
        ids = torch.randint(0, cfg.vocab_size, (batch,), device=common.DEVICE)

        def step():
            with torch.no_grad():
                return model.step(ids, state)

        return step

    return setup


def weight_target(weight_bytes: int):
    def target(ceilings: Ceilings) -> float:
        return 2 * weight_bytes / (ceilings.copy_TBps * 1e12) * 1e3

    return target


def cases(peers: GpuPeers, batches: tuple[int, ...] = BATCHES) -> list[Case]:
    update, update_note = peers.get(
        "mamba_ssm", "mamba_ssm.ops.triton.selective_state_update", "selective_state_update"
    )
    m1_auto, m2_auto = auto_backends("selective_scan_step"), auto_backends("ssd_step")
    out = []
    for batch in batches:
        m1_bytes = 2 * batch * M1_D * M1_N * FP32 + 4 * batch * M1_D * BF16
        m2_bytes = 2 * batch * M2_H * M2_P * M2_N * FP32 + 2 * batch * M2_H * M2_P * BF16
        step = dict(workload="W5", mode="step", L=None, batch=batch, graph=True)
        out += [
            Case(
                impl="ssmkit selective_scan_step",
                setup=_ssmkit_m1(batch),
                bytes_moved=m1_bytes,
                note=f"d 4096, n 16 (auto: {m1_auto}); CUDA graph",
                **step,
            ),
            Case(
                impl="mamba_ssm state_update (M1)",
                setup=None if update is None else _mamba_m1(update, batch),
                bytes_moved=m1_bytes,
                note=update_note if update is None else f"{update_note}; CUDA graph",
                **step,
            ),
            Case(
                impl="ssmkit ssd_step",
                setup=_ssmkit_m2(batch),
                bytes_moved=m2_bytes,
                note=f"h 64, p 64, n 128 (auto: {m2_auto}); CUDA graph",
                **step,
            ),
            Case(
                impl="mamba_ssm state_update (M2)",
                setup=None if update is None else _mamba_m2(update, batch),
                bytes_moved=m2_bytes,
                note=update_note if update is None else f"{update_note}; CUDA graph",
                **step,
            ),
            Case(
                workload="W5",
                impl="torch SDPA decode",
                mode="step",
                L=KV_CONTEXT,
                batch=batch,
                setup=_attention(batch),
                bytes_moved=2 * batch * KV_HEADS * KV_CONTEXT * KV_DIM * BF16,
                graph=True,
                note="one query over a 4K KV cache, 16 heads x 128; CUDA graph",
            ),
        ]
    for name in MODELS:
        step_op = "ssd_step" if name.startswith("mamba2") else "selective_scan_step"
        model_auto = auto_backends(step_op, "causal_conv1d")
        for batch in batches:
            weights, state = _model_sizes(name, batch)
            out.append(
                Case(
                    workload="W5",
                    impl=f"ssmkit {name}",
                    mode="decode",
                    L=None,
                    batch=batch,
                    setup=_model(name, batch),
                    bytes_moved=weights + 2 * state,
                    target_ms=weight_target(weights),
                    graph=True,
                    tokens=batch,
                    extra={"weights_gib": round(weights / 2**30, 2)},
                    note=f"LanguageModel.step in a CUDA graph, host-side id check skipped (auto: {model_auto})",
                )
            )
    return out
