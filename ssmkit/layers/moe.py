"""Mixture of gated-MLP experts with top-k routing, as in Jamba (and Mixtral).

    p = softmax(router(x))                     # over all E experts, fp32
    w, e = top_k(p)                            # w renormalized to sum 1 only if normalize_top_k (Jamba: no)
    y = sum_j w_j * experts[e_j](x)

Glossary: num_experts <-> E, top_k <-> k, t = number of tokens (all leading dimensions flattened).
Parameter names follow Hugging Face Jamba: `router` (Linear, no bias) and `experts.{i}.{gate,up,down}_proj`.

Tokens are grouped by expert (a stable sort of the t*k assignments), each expert runs once on all its tokens,
and the weighted outputs are scattered back with one index_add: no per-token Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..ops._checks import check_float, check_tensor
from .mlp import ACTIVATIONS, GatedMLP, MLPConfig


@dataclass
class MoEConfig:
    """Routing and the experts' MLP shape (d_hidden=None: hidden_mult * d_model rounded up to multiple_of).

    aux_loss_coef scales the load-balancing loss stored in `MoE.aux_loss`; a model adds it to its loss as is.
    """

    num_experts: int = 16
    top_k: int = 2
    d_hidden: int | None = None
    hidden_mult: float = 8 / 3
    multiple_of: int = 64
    activation: str = "silu"
    bias: bool = False
    normalize_top_k: bool = False
    aux_loss_coef: float = 0.01

    def __post_init__(self) -> None:
        if not isinstance(self.num_experts, int) or self.num_experts <= 0:
            raise ValueError(f"num_experts: expected a positive int, got {self.num_experts!r}")
        if not isinstance(self.top_k, int) or not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"top_k: expected an int in [1, num_experts={self.num_experts}], got {self.top_k!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.aux_loss_coef < 0:
            raise ValueError(f"aux_loss_coef: expected a number >= 0, got {self.aux_loss_coef!r}")
        self.expert_config()  # validates the MLP fields

    def expert_config(self) -> MLPConfig:
        return MLPConfig(
            d_hidden=self.d_hidden,
            hidden_mult=self.hidden_mult,
            multiple_of=self.multiple_of,
            activation=self.activation,
            bias=self.bias,
        )


class MoE(nn.Module):
    """Top-k mixture of GatedMLP experts; input (..., d_model) -> (..., d_model).

    After each forward, `aux_loss` holds the Switch-style load-balancing loss of that call, a 0-dim tensor
    (fp32; fp64 for fp64 input) that carries gradient to the router:
        aux_loss = aux_loss_coef * E * sum_e f_e * P_e
    f_e is the fraction of tokens sent to expert e, counting each of a token's k choices (so sum_e f_e = k, as
    Hugging Face Mixtral/Jamba count it); P_e is the mean router probability of e. Perfectly balanced routing
    gives aux_loss_coef * k.
    """

    def __init__(
        self,
        d_model: int,
        config: MoEConfig | None = None,
        *,
        layer_idx: int = 0,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(d_model, int) or d_model <= 0:
            raise ValueError(f"d_model: expected a positive int, got {d_model!r}")
        self.config = config = config if config is not None else MoEConfig()
        self.d_model = d_model
        self.layer_idx = layer_idx
        self.num_experts = config.num_experts
        self.top_k = config.top_k
        self.router = nn.Linear(d_model, config.num_experts, bias=False, device=device, dtype=dtype)
        expert_cfg = config.expert_config()
        self.experts = nn.ModuleList(
            GatedMLP(d_model, expert_cfg, layer_idx=layer_idx, device=device, dtype=dtype)
            for _ in range(config.num_experts)
        )
        self.aux_loss: torch.Tensor = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x)
        check_float("x", x)
        d, n_exp, k = self.d_model, self.num_experts, self.top_k
        if x.dim() == 0 or x.shape[-1] != d:
            raise ValueError(f"x: expected shape (..., d_model) = (..., {d}), got {tuple(x.shape)}")
        xf = x.reshape(-1, d)  # (t, d)
        t = xf.shape[0]
        # routing in fp32 (fp64 kept) so near-tied experts are ranked the same in every activation dtype
        route_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        probs = torch.softmax(self.router(xf), dim=-1, dtype=route_dtype)  # (t, E)
        top_w, top_e = probs.topk(k, dim=-1)  # (t, k), (t, k)
        if self.config.normalize_top_k:
            top_w = top_w / top_w.sum(dim=-1, keepdim=True)

        flat_e = top_e.reshape(-1)  # (t*k,) expert of each (token, choice) assignment
        counts = torch.bincount(flat_e, minlength=n_exp)  # (E,)
        self.aux_loss = self._load_balancing_loss(probs, counts)
        if t == 0:
            return x.clone()

        order = torch.argsort(flat_e, stable=True)  # (t*k,) assignments grouped by expert
        token = order // k  # (t*k,) token of each grouped assignment
        weight = top_w.reshape(-1)[order].to(x.dtype)  # (t*k,)
        outs = []
        # one host sync for the split sizes; each expert then runs once on its contiguous group, called as a
        # module so hooks (FSDP2's per-expert sharding included) see it
        for expert, tokens_e in zip(self.experts, token.split(counts.tolist())):
            if tokens_e.numel() > 0:
                outs.append(expert(xf.index_select(0, tokens_e)))  # (t_e, d)
        weighted = torch.cat(outs) * weight[:, None]  # (t*k, d)
        y = xf.new_zeros(t, d).index_add(0, token, weighted)  # (t, d): each token sums its k expert outputs
        return y.reshape(x.shape)

    def _load_balancing_loss(self, probs: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        t = probs.shape[0]
        if t == 0:
            return probs.new_zeros(())
        frac_tokens = counts.to(probs.dtype) / t  # (E,) sums to k; no gradient (counts of an argmax)
        mean_prob = probs.mean(dim=0)  # (E,) carries the gradient to the router
        return self.config.aux_loss_coef * self.num_experts * (frac_tokens * mean_prob).sum()

    def extra_repr(self) -> str:
        cfg = self.config
        return f"num_experts={cfg.num_experts}, top_k={cfg.top_k}, normalize_top_k={cfg.normalize_top_k}"
