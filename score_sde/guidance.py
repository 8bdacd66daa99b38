"""Class-conditional sampling as score functions, so that every sampler (PC, ODE, fast) takes it unchanged.

- Classifier guidance (the paper's, Song et al. 2021 §5 and App. I): s(x, t) + scale·∇_x log p_t(y | x), with
  a noise-conditional classifier. At scale 1 and exact ingredients it is the class-conditional score
  ∇_x log p_t(x | y), by Bayes' rule: log p_t(x | y) = log p_t(x) + log p_t(y | x) − log p(y).
- Classifier-free guidance (Ho & Salimans 2022): (1 + w)·s(x, t, y) − w·s(x, t, ∅) from one network trained
  with and without the label; w = 0 is the conditional score.
"""
from collections.abc import Callable

import torch

from score_sde.sde import ScoreFn

# (x [B, ...], t [B], labels [B] or None for the null class) -> score like x
ConditionalScoreFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
# (x [B, ...], t [B]) -> log p_t(class | x) [B, num_classes]
ClassifierFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_labels(labels: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    if labels.ndim != 1 or labels.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"labels must be integer class indices [B], got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    if num_classes is not None and ((labels < 0) | (labels >= num_classes)).any():
        raise ValueError(f"labels must lie in [0, {num_classes}), got {sorted(set(labels.tolist()))}")
    return labels


def classifier_free_guidance(cond_score_fn: ConditionalScoreFn, labels: torch.Tensor, w: float) -> ScoreFn:
    """(1 + w)·s(x, t, labels) − w·s(x, t, ∅) as a score function (x, t) -> like x; w = 0 makes one
    evaluation, the conditional score, and w > 0 two."""
    labels = _check_labels(labels)
    if not w >= 0:
        raise ValueError(f"the guidance weight w must be >= 0, got {w}")

    def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        conditional = cond_score_fn(x, t, labels.to(x.device))
        if w == 0:
            return conditional
        return (1 + w) * conditional - w * cond_score_fn(x, t, None)

    return score_fn


def classifier_guidance(score_fn: ScoreFn, classifier_log_prob_fn: ClassifierFn, labels: torch.Tensor,
                        scale: float = 1.0) -> ScoreFn:
    """s(x, t) + scale·∇_x log p_t(labels | x) as a score function (x, t) -> like x.

    The classifier's gradient is taken under its own enable_grad on a detached copy of x, so a sampler that
    runs under no_grad keeps no graph. Labels outside the classifier's classes are refused at the first
    call (one host read, then none)."""
    labels = _check_labels(labels)
    checked = False

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        nonlocal checked
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            log_probs = classifier_log_prob_fn(x_in, t)
            if not checked:
                _check_labels(labels, log_probs.shape[1])
                checked = True
            chosen = log_probs.gather(1, labels.to(x.device)[:, None]).sum()
            (gradient,) = torch.autograd.grad(chosen, x_in)
        return score_fn(x, t) + scale * gradient

    return guided
