"""Samplers that use only a score function: predictor-corrector, the probability-flow ODE and the fast
few-step solvers."""
from score_sde.sampling.correctors import CORRECTORS
from score_sde.sampling.fast import fast_sample
from score_sde.sampling.ode import ode_sample, probability_flow_drift
from score_sde.sampling.pc import pc_sample
from score_sde.sampling.predictors import PREDICTORS

__all__ = ["CORRECTORS", "PREDICTORS", "fast_sample", "ode_sample", "pc_sample", "probability_flow_drift"]
