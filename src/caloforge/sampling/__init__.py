"""Samplers that know nothing of networks: token sampling (with a CUDA-graph step on GPUs), fixed-step ODE solvers by name,
trained bespoke (BNS) solvers, VP-SDE samplers (Euler-Maruyama, probability flow), EDM
samplers of a denoiser (Heun, Euler, stochastic churn) and consistency-model sampling."""

from .bespoke import BNSSolver, train_bns
from .cuda_graph_tokens import CUDAGraphTokenSampler
from .edm import (
    EDM_METHODS,
    EDM_SAMPLER_NAMES,
    Denoiser,
    EDMSampler,
    consistency_levels,
    consistency_sample,
    edm_sample,
    karras_sigmas,
    parse_edm_sampler,
)
from .ode import ODE_METHODS, ode_step, solve_ode, solve_ode_trajectory, uniform_times
from .sde import (
    SDE_SAMPLER_NAMES,
    EulerMaruyama,
    ProbabilityFlowSampler,
    SDESampler,
    euler_maruyama,
    parse_sde_sampler,
    probability_flow,
)
from .solvers import SOLVER_NAMES, FixedStepSolver, Solver, parse_solver
from .tokens import draw_categorical, filter_logits, sample_tokens

__all__ = [
    "BNSSolver",
    "CUDAGraphTokenSampler",
    "Denoiser",
    "EDMSampler",
    "EDM_METHODS",
    "EDM_SAMPLER_NAMES",
    "EulerMaruyama",
    "FixedStepSolver",
    "ODE_METHODS",
    "ProbabilityFlowSampler",
    "SDESampler",
    "SDE_SAMPLER_NAMES",
    "SOLVER_NAMES",
    "Solver",
    "consistency_levels",
    "consistency_sample",
    "draw_categorical",
    "edm_sample",
    "euler_maruyama",
    "filter_logits",
    "karras_sigmas",
    "ode_step",
    "parse_edm_sampler",
    "parse_sde_sampler",
    "parse_solver",
    "probability_flow",
    "sample_tokens",
    "solve_ode",
    "solve_ode_trajectory",
    "train_bns",
    "uniform_times",
]
