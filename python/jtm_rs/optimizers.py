"""The optimisers of training: Adam for the dense parameters and lazy Adam for the tables of
node embeddings (only the rows a batch touched move, as in large-scale recommenders)."""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
from torch import nn

from ._arrays import sparse_rows
from ._core import lazy_adam_rows


class CombinedOptimizer:
    """Several optimisers stepped as one (``zero_grad``/``step``/``param_groups``)."""

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]):
        self.optimizers = list(optimizers)

    @property
    def param_groups(self) -> list:
        return [g for o in self.optimizers for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        parts = state.get("optimizers") if isinstance(state, dict) else None
        if not isinstance(parts, list) or len(parts) != len(self.optimizers):
            raise ValueError(f"expected the state of {len(self.optimizers)} optimisers")
        for o, st in zip(self.optimizers, parts):
            o.load_state_dict(st)


class LazyAdam(torch.optim.Optimizer):
    """``torch.optim.SparseAdam``'s update (lazy Adam: only the rows a batch touched move, their
    moments bias-corrected by the table's step count), with the same state, minus its cost:
    SparseAdam coalesces every gradient (a sort) and updates through sparse adds. Here a
    gradient whose rows are already distinct and sorted — what :class:`JTMModel`'s one lookup
    per batch gives — is used as it is (checked in O(rows)); any other is coalesced first."""

    def __init__(self, params, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            (b1, b2), lr, eps = group["betas"], group["lr"], group["eps"]
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if not g.is_sparse:
                    raise RuntimeError("LazyAdam needs sparse gradients (nn.Embedding(sparse=True)); use Adam")
                rows, values = sparse_rows(g)
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                step_size = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
                if _native_rows(p, state, values, rows):
                    # One pass over the touched rows (rust/training_kernels.rs): the gathers
                    # and scatters below were ~16 % of a training step at 10^6 items.
                    # (It rounds differently from them: docs/scale.md.)
                    lazy_adam_rows(p.detach().numpy(), state["exp_avg"].numpy(), state["exp_avg_sq"].numpy(),
                                   rows.numpy(), values.numpy(), b1, b2, eps, step_size,
                                   n_threads=torch.get_num_threads())
                    continue
                m = state["exp_avg"].index_select(0, rows).lerp_(values, 1 - b1)
                v = state["exp_avg_sq"].index_select(0, rows).mul_(b2).addcmul_(values, values, value=1 - b2)
                state["exp_avg"].index_copy_(0, rows, m)
                state["exp_avg_sq"].index_copy_(0, rows, v)
                p.index_add_(0, rows, m.div_(v.sqrt_().add_(eps)), alpha=-step_size)
        return loss


def _native_rows(p: torch.Tensor, state: dict, values: torch.Tensor, rows: torch.Tensor) -> bool:
    """Whether :func:`lazy_adam_rows` can update ``p`` in place: contiguous CPU float32 tables
    and gradient, int64 rows."""
    tables = (p, state["exp_avg"], state["exp_avg_sq"], values)
    on_cpu = all(x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous() for x in tables)
    return on_cpu and p.dim() == 2 and rows.dtype == torch.int64 and rows.is_contiguous()


def make_optimizer(model: nn.Module, learning_rate: float):
    """Adam, with :class:`LazyAdam` for the tables of embeddings built with ``sparse=True``
    (only the rows a batch touched move, as in large-scale recommenders)."""
    sparse = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse]
    ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in ids]
    if not sparse:
        return _adam(dense, learning_rate)
    parts = [LazyAdam(sparse, lr=learning_rate)]
    if dense:
        parts.append(_adam(dense, learning_rate))
    return CombinedOptimizer(parts)


def _adam(params: List[torch.Tensor], learning_rate: float) -> torch.optim.Optimizer:
    """Adam with torch's fused kernel (one pass over all tensors: the per-tensor loop was ~5 %
    of a CPU training step), or the plain one where the device has no fused kernel."""
    try:
        return torch.optim.Adam(params, lr=learning_rate, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=learning_rate)
