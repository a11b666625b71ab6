"""Semantic metrics on embeddings: ``zeroshot`` classification and ``retrieval`` recall@K.

Shapes: image embeddings ``[B, D]``, text embeddings ``[T, D]`` (both L2-normalised, in one
space) and ``targets`` ``[B]`` (int): the index of the text that matches each image. Scores are
cosine similarities ``img @ txt.T`` ``[B, T]``.

* ``zeroshot``: the texts are class prompts (one per class, the same at every update) and the
  targets the class labels; reports top-1 accuracy (``zeroshot_top1``) and, with five classes
  or more, top-5 (``zeroshot_top5``).
* ``retrieval``: each update adds images and texts to one pool (targets index the update's
  texts); reports recall@1 and @5 in both directions. Image -> text: the matching text is
  among the image's K nearest texts. Text -> image (over texts that match some image): one of
  the K nearest images matches it. With one caption per image (T = B, targets = arange(B)) this
  is the usual paired retrieval; with class captions, any image of the class counts.

These metrics take embeddings, not images (``inputs = "embeddings"``); the reconstruction
metrics' ``update(prediction, target)`` takes image pairs.
"""

from __future__ import annotations

import torch

from atoken.core.errors import ConfigError, ModalityInputError
from atoken.losses.siglip import check_embeddings
from atoken.plugins.hookspecs import hookimpl

__all__ = ["EmbeddingMetric", "Retrieval", "ZeroShotAccuracy", "recall_at_k"]


def _check_targets(targets: torch.Tensor, B: int, T: int, who: str) -> torch.Tensor:
    targets = torch.as_tensor(targets)
    if targets.shape != (B,) or targets.is_floating_point():
        raise ModalityInputError(f"{who}: targets must be {B} ints, got {tuple(targets.shape)}")
    if B and (int(targets.min()) < 0 or int(targets.max()) >= T):
        raise ModalityInputError(f"{who}: targets must index the {T} texts")
    return targets.long()


def recall_at_k(
    image: torch.Tensor, text: torch.Tensor, targets: torch.Tensor, k: int
) -> tuple[float, float]:
    """(image -> text, text -> image) recall@k; see the module doc."""
    B, T = image.shape[0], text.shape[0]
    scores = image.float() @ text.float().T  # [B, T]
    match = torch.zeros(B, T, dtype=torch.bool)
    match[torch.arange(B), targets.cpu()] = True  # [B, T]
    top_t = scores.topk(min(k, T), dim=1).indices.cpu()  # [B, k]
    i2t = match.gather(1, top_t).any(dim=1).float().mean()
    used = match.any(dim=0)  # [T]: texts some image matches
    top_i = scores.T.topk(min(k, B), dim=1).indices.cpu()  # [T, k]
    hits = match.T.gather(1, top_i).any(dim=1)  # [T]
    t2i = hits[used].float().mean()
    return float(i2t), float(t2i)


class EmbeddingMetric:
    """``reset()``, ``update(image_emb, text_emb, targets)``, ``compute() -> dict``."""

    name = ""
    distributional = False
    inputs = "embeddings"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._images: list[torch.Tensor] = []
        self._texts: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, image: torch.Tensor, text: torch.Tensor, targets: torch.Tensor) -> None:
        check_embeddings(image, text, self.name)
        targets = _check_targets(targets, image.shape[0], text.shape[0], self.name)
        self._add(image.detach().float().cpu(), text.detach().float().cpu(), targets.cpu())

    def _add(self, image: torch.Tensor, text: torch.Tensor, targets: torch.Tensor) -> None:
        self._images.append(image)
        self._texts.append(text)
        self._targets.append(targets)

    def _pool(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self._images or not sum(x.shape[0] for x in self._images):
            raise ConfigError(f"{self.name}: no embeddings yet; call update() before compute()")
        return torch.cat(self._images), torch.cat(self._texts), torch.cat(self._targets)


class ZeroShotAccuracy(EmbeddingMetric):
    """Zero-shot classification accuracy from class-prompt embeddings (see module doc)."""

    name = "zeroshot"

    def _add(self, image: torch.Tensor, text: torch.Tensor, targets: torch.Tensor) -> None:
        if self._texts and not torch.equal(self._texts[0], text):
            raise ConfigError("zeroshot: the class prompts changed between updates")
        super()._add(image, text if not self._texts else self._texts[0][:0], targets)

    def compute(self) -> dict[str, float]:
        image, _, targets = self._pool()
        classes = self._texts[0]  # [K, D]
        scores = image @ classes.T  # [B, K]
        out = {"zeroshot_top1": float((scores.argmax(dim=1) == targets).float().mean())}
        if classes.shape[0] >= 5:
            top5 = scores.topk(5, dim=1).indices  # [B, 5]
            out["zeroshot_top5"] = float((top5 == targets[:, None]).any(dim=1).float().mean())
        return out


class Retrieval(EmbeddingMetric):
    """Image <-> text retrieval recall@1 and @5 over everything seen (see module doc)."""

    name = "retrieval"

    def _add(self, image: torch.Tensor, text: torch.Tensor, targets: torch.Tensor) -> None:
        offset = sum(t.shape[0] for t in self._texts)
        super()._add(image, text, targets + offset)

    def compute(self) -> dict[str, float]:
        image, text, targets = self._pool()
        out = {}
        for k in (1, 5):
            i2t, t2i = recall_at_k(image, text, targets, k)
            out[f"i2t_r{k}"], out[f"t2i_r{k}"] = i2t, t2i
        return out


@hookimpl
def register_metrics(register) -> None:
    register("zeroshot", ZeroShotAccuracy)
    register("retrieval", Retrieval)
