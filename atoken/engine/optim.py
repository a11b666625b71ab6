"""Optimizer and learning-rate schedule of a training run.

AdamW with decoupled weight decay on matrices only (biases, norms, position tables and
learned probes are not decayed), a learning-rate multiplier for parameters that came from a
pretrained encoder, and linear warmup followed by cosine decay to ``min_lr`` over the
stage's steps, or over ``[optim] schedule_steps`` when set (a resumed run keeps the length it
started with: :func:`atoken.engine.run_changes.keep_schedule`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from atoken.core.patch_embed import PositionTable2D
from atoken.core.pooling import MAPHead
from atoken.engine.runconfig import OptimConfig

__all__ = ["build_optimizer", "grad_norm", "lr_at", "param_groups", "set_lr"]


def param_groups(
    model: nn.Module, cfg: OptimConfig, pretrained: Callable[[str], bool] = lambda name: False
) -> list[dict]:
    """Four groups: (decay or not) x (pretrained or not), each with its ``lr_mult``."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    exempt = _no_decay(model)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim >= 2 and id(p) not in exempt
        groups.setdefault((decay, pretrained(name)), []).append(p)
    out = []
    for (decay, is_pretrained), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "weight_decay": cfg.weight_decay if decay else 0.0,
                "lr_mult": cfg.encoder_lr_mult if is_pretrained else 1.0,
            }
        )
    return out


def _no_decay(model: nn.Module) -> set[int]:
    """Ids of the matrices that are embeddings, not weights: position tables and MAP probes
    (found by module type, whatever the parameter is called)."""
    out: set[int] = set()
    for module in model.modules():
        if isinstance(module, PositionTable2D):
            out.update(id(p) for p in module.parameters(recurse=False))
        elif isinstance(module, MAPHead):
            out.add(id(module.probe))
    return out


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, pretrained: Callable[[str], bool] = lambda name: False
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; each group's lr is set by :func:`lr_at` every step."""
    return torch.optim.AdamW(param_groups(model, cfg, pretrained), lr=cfg.lr, betas=cfg.betas)


def lr_at(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Learning rate at ``step`` (0-based): linear warmup, then cosine to ``min_lr`` at
    ``cfg.schedule_steps`` (0: at ``total_steps``, the stage's length), then ``min_lr``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, (cfg.schedule_steps or total_steps) - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Apply ``lr`` times each group's ``lr_mult``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)


def grad_norm(parameters: Iterable[nn.Parameter]) -> torch.Tensor:
    """The global L2 norm of the gradients (inf/NaN propagate)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
