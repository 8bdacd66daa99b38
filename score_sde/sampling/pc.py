"""The predictor-corrector sampler (Song et al. 2021, Alg. 1): N noise levels from T down to eps.

One level is one pure tensor function `step(x, t, *noise) -> (x, x_mean)`: the noise is drawn outside it
(torch.compile cannot trace a torch.Generator), the time grid is a device tensor made before the loop and
nothing in a step reads a value back to the host, so a step compiles into one graph (CUDA graphs with
compile mode "reduce-overhead") and the loop never waits for the GPU.
"""
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from score_sde.acceleration import compiled
from score_sde.registry import lookup
from score_sde.sampling.callbacks import LastEvaluation, StepCallback
from score_sde.sampling.correctors import CORRECTORS, Corrector
from score_sde.sampling.predictors import PREDICTORS, Predictor
from score_sde.sde import SDE, ScoreFn, randn_like

# after_update(x, x_mean, t) -> (x, x_mean): what follows each PC update (controllable.replacement)
AfterUpdate = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def pc_step(predict: Predictor, correct: Corrector, use_predictor: bool = True,
            after_update: AfterUpdate | None = None) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """One level of PC sampling, the corrector then the predictor: step(x, t, *noise) -> (x, x_mean), noise
    being correct.noises then predict.noises standard normal tensors like x. after_update(x, x_mean, t) ->
    (x, x_mean), when given, follows each of the two updates (the paper's inpainting and colorization
    replace the observed part there: score_sde/controllable.py)."""
    split = correct.noises
    after_update = after_update or (lambda x, x_mean, t: (x, x_mean))

    def step(x, t, *noise):
        x, x_mean = after_update(*correct.update(x, t, noise[:split]), t)
        if use_predictor:  # corrector-only sampling keeps the corrector's mean for denoising
            x, x_mean = after_update(*predict.update(x, t, noise[split:]), t)
        return x, x_mean

    return step


@torch.no_grad()  # a score function that needs gradients opens its own enable_grad
def pc_sample(sde: SDE, score_fn: ScoreFn, shape: Sequence[int], predictor: str = "reverse_diffusion",
              corrector: str = "langevin", snr: float = 0.16, n_steps: int = 1,
              probability_flow: bool = False, denoise: bool = False, eps: float | None = None,
              generator: torch.Generator | None = None, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32, progress: bool = False, compile_mode: str | None = None,
              callback: StepCallback | None = None, after_update: AfterUpdate | None = None
              ) -> tuple[torch.Tensor, int]:
    """Draw samples by alternating a corrector and a predictor step on each of the SDE's N noise levels.

    Args:
        sde: the forward SDE; its N sets the number of levels.
        score_fn: (x [B, ...], t [B]) -> score like x.
        shape: [B, ...] of the samples.
        predictor, corrector: names in PREDICTORS / CORRECTORS; at least one must not be "none".
        snr, n_steps: the corrector's target signal-to-noise ratio and steps per noise level.
        probability_flow: predict along the probability-flow ODE instead of the reverse SDE.
        denoise: return the last step's mean (no noise added at the end), as the original code does by
            default; with predictor "none", the last corrector step's mean (the original returns the noisy
            sample there). Off by default, as in every sampler here (docs/sde.md); the CLI's
            sampling.noise_removal=True turns it on.
        eps: the smallest time (default: sde.sampling_eps); the levels are linspace(T, eps, N).
        generator: a torch.Generator on `device`, for reproducible samples.
        compile_mode: None (eager) or a torch.compile mode (acceleration.COMPILE_MODES) for the step;
            "reduce-overhead" replays it as a CUDA graph on a GPU. Same samples, up to rounding.
        callback: callback(step, x, x0_hat) after each noise level, x0_hat being the data prediction of the
            level's last score evaluation; it costs no evaluation. Eager only (compile_mode None).
        after_update: after_update(x, x_mean, t) -> (x, x_mean) after the corrector's and the predictor's
            updates (controllable.replacement); eager only.
    Returns:
        (x [B, ...], nfe): the samples and the number of score evaluations made.
    """
    eps = sde.sampling_eps if eps is None else eps
    if not 0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, {sde.T}), got {eps}")
    if predictor == "none" and corrector == "none":
        raise ValueError("predictor and corrector are both 'none': the sampler would return prior noise")
    if (callback is not None or after_update is not None) and compile_mode is not None:
        raise ValueError("a callback or after_update needs the eager PC step: compile_mode must be None")
    if callback is not None:
        score_fn = watched = LastEvaluation(sde, score_fn)
    predict = lookup(PREDICTORS, predictor, "predictor")(sde, score_fn, probability_flow)
    correct = lookup(CORRECTORS, corrector, "corrector")(sde, score_fn, snr, n_steps)
    step = compiled(pc_step(predict, correct, predictor != "none", after_update), compile_mode, "the PC step")
    noises = correct.noises + predict.noises  # the "none" predictor draws none
    x = sde.prior_sampling(shape, generator=generator, device=device, dtype=dtype)
    x_mean = x
    timesteps = torch.linspace(sde.T, eps, sde.N, device=x.device, dtype=x.dtype)
    for i in tqdm(range(sde.N), desc="PC sampling", disable=not progress):
        noise = [randn_like(x, generator) for _ in range(noises)]  # in the order the steps use them
        if compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs are this one's inputs
        x, x_mean = step(x, timesteps[i].expand(shape[0]), *noise)
        if callback is not None:
            callback(i, x, watched.x0_hat())
    x = x_mean if denoise else x
    if compile_mode == "reduce-overhead":
        x = x.clone()  # a CUDA graph's output: its next replay (another call) would overwrite it
    return x, sde.N * (predict.evaluations + correct.evaluations)
