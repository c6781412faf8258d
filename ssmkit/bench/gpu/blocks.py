"""W6: a full Mamba and Mamba-2 block (`ssmkit.layers`), d_model 2048, bf16, B = 8 x L = 8192 (65,536 tokens),
fwd and fwd+bwd with the peak of torch.cuda.max_memory_allocated (parameters, input, activations, gradients);
mamba_ssm's modules measured in the same run when they import.

Work counted: the block's nn.Linear FLOPs (2 * in * out per token forward, 3x that forward + backward), against
the bf16 matmul ceiling. The guide puts them at about 4.9 ms forward and 15 ms forward + backward on the H200.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

from . import common
from .common import Case, auto_backends, forward_backward
from .peers_gpu import GpuPeers

D_MODEL, BATCH, LENGTH = 2048, 8, 8192
TARGET_MS = {("Mamba", "fwd+bwd"): 22.0, ("Mamba2", "fwd+bwd"): 20.0}
MODES = ("fwd", "fwd+bwd")


def linear_flops(module: nn.Module, tokens: int) -> int:
    return sum(2 * m.in_features * m.out_features * tokens for m in module.modules() if isinstance(m, nn.Linear))


def _block(build, mode: str, returns_tuple: bool):
    def setup():
        torch.manual_seed(0)
        layer = build()
        x = torch.randn(BATCH, LENGTH, D_MODEL, device=common.DEVICE, dtype=torch.bfloat16)
        x.requires_grad_(mode != "fwd")

        def call(x):
            out = layer(x)
            return out[0] if returns_tuple else out

        params = [p for p in layer.parameters() if p.requires_grad] if mode != "fwd" else []
        return forward_backward(call, {"x": x}, mode, params)

    return setup


def _ssmkit_builder(kind: str, **config):
    from ...layers.mamba import Mamba, MambaConfig
    from ...layers.mamba2 import Mamba2

    if kind == "Mamba" and config:
        return lambda device: Mamba(D_MODEL, MambaConfig(**config), device=device, dtype=torch.bfloat16)
    cls = {"Mamba": Mamba, "Mamba2": Mamba2}[kind]
    return lambda device: cls(D_MODEL, device=device, dtype=torch.bfloat16)


def _meta_flops(build) -> int:
    return linear_flops(build(device="meta"), BATCH * LENGTH)


def cases(peers: GpuPeers) -> list[Case]:
    out = []
    has_conv_ext = importlib.util.find_spec("causal_conv1d") is not None
    peer_specs = {
        "Mamba": ("mamba_ssm.modules.mamba_simple", "Mamba", {}),
        # without the causal_conv1d extension its fused path cannot run: the unfused one (nn.Conv1d + SiLU)
        "Mamba2": ("mamba_ssm.modules.mamba2", "Mamba2", {} if has_conv_ext else {"use_mem_eff_path": False}),
    }
    scan_op = {"Mamba": ("selective_scan",), "Mamba2": ("ssd", "gated_rms_norm")}
    for kind in ("Mamba", "Mamba2"):
        ours = _ssmkit_builder(kind)
        ours_auto = auto_backends(*scan_op[kind], "causal_conv1d")
        fwd_flops = _meta_flops(ours)
        module, attr, kwargs = peer_specs[kind]
        peer_cls, peer_note = peers.get("mamba_ssm", module, attr)
        if peer_cls is not None:
            peer_note = f"{peer_note}, {kwargs or 'defaults'}"
        for mode in MODES:
            shared = dict(
                workload="W6",
                mode=mode,
                L=LENGTH,
                batch=BATCH,
                flops=fwd_flops * (1 if mode == "fwd" else 3),
            )
            out.append(
                Case(
                    impl=f"ssmkit {kind}",
                    setup=_block(lambda ours=ours: ours(device=common.DEVICE), mode, returns_tuple=True),
                    target_ms=TARGET_MS.get((kind, mode)),
                    note=f"ssmkit.layers.{kind}(2048) (auto: {ours_auto})",
                    **shared,
                )
            )
            if kind == "Mamba" and mode == "fwd+bwd":
                # the default trains through the fused path (less kept per layer, its forward run twice); one
                # block alone peaks about as high either way, so the plain ops are on record too
                plain = _ssmkit_builder(kind, fused=False)
                out.append(
                    Case(
                        impl=f"ssmkit {kind} unfused",
                        setup=_block(lambda plain=plain: plain(device=common.DEVICE), mode, returns_tuple=True),
                        target_ms=TARGET_MS.get((kind, mode)),
                        note=f"ssmkit.layers.{kind}(2048, MambaConfig(fused=False)) (auto: {ours_auto})",
                        **shared,
                    )
                )
            build_peer = None
            if peer_cls is not None:

                def build_peer(cls=peer_cls, kwargs=kwargs):
                    return cls(D_MODEL, device=common.DEVICE, dtype=torch.bfloat16, **kwargs)

            out.append(
                Case(
                    impl=f"mamba_ssm {kind}",
                    setup=None if build_peer is None else _block(build_peer, mode, returns_tuple=False),
                    note=peer_note,
                    **shared,
                )
            )
    return out
