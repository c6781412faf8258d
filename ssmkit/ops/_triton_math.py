"""Fast fp32 math for the Triton kernels: exp2, log2 and reciprocal as single MUFU instructions on NVIDIA GPUs.

Why: `tl.exp2` lowers to `ex2.approx.f32`, which ptxas wraps in a compare and two predicated multiplies so that
denormal results come out right (4 instructions where 1 would do); `tl.log` and `x / y` are wrapped the same way or
refined to IEEE rounding. The selective scan's forward issues 16 exp2 per channel and step, so those wrappers were
about a fifth of its instructions. The `.ftz` forms flush denormals (|x| < 1.2e-38) to zero, which no result here
can tell from an exact zero; their error is that of the MUFU unit (about 2 ulp), far inside the tolerance rule.

Under TRITON_INTERPRET=1 (CI on CPU) and off NVIDIA GPUs, inline PTX cannot run: the same names fall back to
Triton's own functions, so the interpreter tests the same kernels with standard math.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

# Read when the kernels are first imported (each op imports its kernels on first use, like Triton reads the flag).
INLINE_PTX = os.environ.get("TRITON_INTERPRET") != "1" and torch.version.hip is None

if INLINE_PTX:

    @triton.jit
    def exp2_fast(x):
        """2**x for fp32 x: one `ex2.approx.ftz.f32`."""
        return tl.inline_asm_elementwise(
            "ex2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True, pack=1
        )

    @triton.jit
    def log2_fast(x):
        """log2(x) for fp32 x > 0: one `lg2.approx.ftz.f32`."""
        return tl.inline_asm_elementwise(
            "lg2.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True, pack=1
        )

    @triton.jit
    def rcp_fast(x):
        """1 / x for fp32 x: one `rcp.approx.ftz.f32` (1 / inf = 0, 1 / 0 = inf)."""
        return tl.inline_asm_elementwise(
            "rcp.approx.ftz.f32 $0, $1;", "=f,f", [x], dtype=tl.float32, is_pure=True, pack=1
        )

    @triton.jit
    def exp_fast(x):
        """e**x for fp32 x: one multiply and one exp2 (-inf gives 0), as Triton's own exp but without the wrapper."""
        return exp2_fast(x * 1.4426950408889634)

    @triton.jit
    def sigmoid_fast(x):
        """1 / (1 + e^-x), fp32: one exp2 and one reciprocal."""
        return rcp_fast(1.0 + exp2_fast(x * -1.4426950408889634))

    @triton.jit
    def prefetch_l1(ptrs):
        """Ask for the lines at ptrs to be brought into L1 (`prefetch.global.L1`), and so L2; nothing is waited for."""
        tl.inline_asm_elementwise(
            "prefetch.global.L1 [$1]; mov.u32 $0, 0;", "=r,l", [ptrs.to(tl.int64, bitcast=True)], dtype=tl.int32,
            is_pure=False, pack=1,
        )  # fmt: skip

    @triton.jit
    def load_f32x4(ptrs):
        """The four fp32 at ptrs .. ptrs + 3 (ptrs 16-byte aligned) as four tensors of ptrs' shape: one 128-bit load
        (`ld.global.v4.f32`) each. Triton itself emits one only where it sees the four addresses contiguous, which
        would also regroup the lanes of every tensor computed from them (see the selective scan's `_state_index`)."""
        return tl.inline_asm_elementwise(
            "ld.global.v4.f32 {$0, $1, $2, $3}, [$4];", "=f,=f,=f,=f,l", [ptrs.to(tl.int64, bitcast=True)],
            dtype=(tl.float32, tl.float32, tl.float32, tl.float32), is_pure=True, pack=1,
        )  # fmt: skip

    @triton.jit
    def round_bf16(x):
        """fp32 x rounded to bf16, to nearest even: one `cvt.rn.bf16.f32`."""
        return x.to(tl.bfloat16)

else:

    @triton.jit
    def exp2_fast(x):
        return tl.exp2(x)

    @triton.jit
    def log2_fast(x):
        return tl.log2(x)

    @triton.jit
    def rcp_fast(x):
        return 1.0 / x

    @triton.jit
    def exp_fast(x):
        return tl.exp(x)

    @triton.jit
    def sigmoid_fast(x):
        return tl.sigmoid(x)

    @triton.jit
    def prefetch_l1(ptrs):
        pass

    @triton.jit
    def load_f32x4(ptrs):
        return tl.load(ptrs), tl.load(ptrs + 1), tl.load(ptrs + 2), tl.load(ptrs + 3)

    @triton.jit
    def round_bf16(x):
        # the interpreter's fp32 -> bf16 cast truncates: round the bits to nearest even first, then it is exact
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return bits.to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def softplus_fast(x):
    """log(1 + e^x), fp32, torch's threshold of 20 (x itself above it), in two special-function ops (exp2, log2).
    With w = e^x: below w = 1/16, log1p(w) is its series to w^6 (truncation below 1e-8 relative), since there the
    rounding of 1 + w and log2's absolute error would show; above, log2(1 + w) ln 2 (relative error within 2e-6)."""
    w = exp2_fast(tl.minimum(x, 20.0) * 1.4426950408889634)
    series = -0.25 + w * (0.20000000298023224 - w * 0.1666666716337204)
    series = w * (1.0 + w * (-0.5 + w * (0.3333333432674408 + w * series)))
    lp = tl.where(w < 0.0625, series, log2_fast(1.0 + w) * 0.6931471805599453)
    return tl.where(x > 20.0, x, lp)
