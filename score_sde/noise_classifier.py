"""The noise-conditional classifier of classifier guidance (Song et al. 2021, §5 and App. I): its training
loss on data perturbed by the SDE's kernel, and the classifier as the log-probability function that
`guidance.classifier_guidance` takes. The network itself is models/classifier.py.

Trained on x_t = m(t)·x₀ + s(t)·z with t ~ U(eps, T), the cross-entropy's minimiser is the noisy posterior
p_t(y | x_t) at every t, so its gradient ∇ₓ log p_t(y | x) is the term Bayes' rule adds to the unconditional
score to give the class-conditional one.
"""
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from score_sde.distributed import ONE_PROCESS, Shard
from score_sde.guidance import ClassifierFn
from score_sde.losses import global_noise
from score_sde.sde import SDE, expand_to
from score_sde.time_sampling import UniformTime


def make_classifier_loss(sde: SDE, eps: float | None = None, train: bool = True, shard: Shard = ONE_PROCESS
                         ) -> Callable[..., torch.Tensor]:
    """The classifier's objective as loss_fn(state, batch, generator=None, class_labels) -> scalar, the
    same signature as train.make_loss's, so train.train_step and the training loop take it unchanged.

    Args:
        sde: the forward SDE whose kernel perturbs the data (the score model's).
        eps: the smallest time drawn (default: sde.likelihood_eps, as the score model's training).
        train: run the network in train mode, through state.ddp when there is one.
        shard: this process's share of the global batch: times and noise are drawn for the global batch.
    """
    times = UniformTime(sde, sde.likelihood_eps if eps is None else eps)

    def loss_fn(state, batch, generator=None, class_labels=None):
        if class_labels is None:
            raise ValueError("the noise-conditional classifier trains on labelled batches (class_labels)")
        network = state.ddp if train and state.ddp is not None else state.model
        network.train(train)
        t = shard.of(times.sample(shard.global_size(batch.shape[0]), generator, batch.device, batch.dtype))
        z = global_noise(batch, generator, shard)  # times and noise drawn as the score losses draw them
        mean, std = sde.marginal_prob(batch, t)
        logits = network(mean + expand_to(std, batch) * z, t)
        return F.cross_entropy(logits.float(), class_labels)

    return loss_fn


def classifier_log_prob_fn(network: nn.Module) -> ClassifierFn:
    """The trained network (eval mode) as (x [B, ...], t [B]) -> log p_t(class | x) [B, num_classes]."""
    network.eval()

    def log_prob_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(network(x, t).float(), dim=1)

    return log_prob_fn


@torch.no_grad()
def accuracy(network: nn.Module, sde: SDE, x: torch.Tensor, class_labels: torch.Tensor, t: float,
             generator: torch.Generator | None = None) -> float:
    """The fraction of the items x [B, ...] (model space) perturbed to time t that the network labels right:
    how much a classifier knows at each noise level (near T, chance)."""
    times = torch.full((len(x),), t, device=x.device, dtype=x.dtype)
    mean, std = sde.marginal_prob(x, times)
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    predicted = classifier_log_prob_fn(network)(mean + expand_to(std, x) * z, times).argmax(1)
    return float((predicted == class_labels).float().mean())
