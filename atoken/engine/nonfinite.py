"""Why a training step was skipped as non-finite, and what to do about it: the words of
``NonFiniteLossError`` (:class:`atoken.engine.trainer.Trainer` raises it after
``[train] max_nonfinite`` such steps in a row).

    nonfinite_cause({"img/l1": nan, "img/kl": 0.1}, nan, bf16=False)
    -> "task 'img': loss term 'l1' went non-finite first (nan). Check the task's data ..."
"""

from __future__ import annotations

import math

__all__ = ["nonfinite_cause"]


def nonfinite_cause(terms: dict[str, float], loss: float, *, bf16: bool) -> str:
    """What went non-finite in a skipped step, and what to do about it: the first of the
    step's logged ``terms`` that is non-finite, in the order the task logged them (a
    mixture's ``label/term``: task ``label``'s loss term ``term``; ``label/loss`` is the
    task's weighted sum), or a finite loss whose gradient norm is not (``bf16``: the step ran
    under bf16 autocast, so fp32 is worth a try)."""
    fp32 = ', or train in fp32 ([train] precision = "fp32")' if bf16 else ""
    first = next(((k, v) for k, v in terms.items() if not math.isfinite(v)), None)
    if first is None and math.isfinite(loss):
        return (
            "the loss is finite but its gradient norm is not: the backward pass gave NaN or "
            "infinite gradients. Lower the learning rate (or raise warmup_steps), look for a "
            "loss term whose derivative is infinite where its value is finite (a sqrt, norm or "
            f"log at 0){fp32}"
        )
    if first is None:
        return (
            "no loss term this process logged is non-finite (another process's batch, or a "
            "term's weight): check every task's data for NaN or infinite values"
        )
    key, value = first
    label, _, term = key.partition("/") if "/" in key else ("", "", key)
    if term == "loss" and label:
        what = f"task {label!r}: its weighted loss is {value} while its terms are finite"
    elif label:
        what = f"task {label!r}: loss term {term!r} went non-finite first ({value})"
    else:
        what = f"loss term {term!r} went non-finite first ({value})"
    return (
        f"{what}. Check the task's data for NaN or infinite values and that the term is "
        f"defined for its inputs (a log or division at 0){fp32}"
    )
