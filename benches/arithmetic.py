"""The arithmetic limit the benches compare against: how fast this machine multiplies
matrices of the model's shape (the MLP's 128 x 64 layer on a block of 8 192 rows)."""

from __future__ import annotations

import time


def gemm_flops_per_s(threads: int, dtype: str = "float32") -> float:
    """Best of 5 timings of 50 ``[8192, 128] @ [128, 64]`` products on ``threads`` torch
    threads, in FLOP/s (a multiply-add is 2 FLOPs); ``dtype="bfloat16"`` multiplies bfloat16
    matrices (where the CPU has no bfloat16 arithmetic, an emulated and slow rate)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(8192, 128).to(getattr(torch, dtype)), torch.randn(128, 64).to(getattr(torch, dtype))
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(50):
            a @ b
        best = max(best, 50 * 2 * 8192 * 128 * 64 / (time.perf_counter() - t))
    return best
