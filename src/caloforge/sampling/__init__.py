"""Samplers that know nothing of networks: token sampling, fixed-step ODE solvers by name,
trained bespoke (BNS) solvers and VP-SDE samplers (Euler-Maruyama, probability flow)."""

from .bespoke import BNSSolver, train_bns
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
    "EulerMaruyama",
    "FixedStepSolver",
    "ODE_METHODS",
    "ProbabilityFlowSampler",
    "SDESampler",
    "SDE_SAMPLER_NAMES",
    "SOLVER_NAMES",
    "Solver",
    "draw_categorical",
    "euler_maruyama",
    "filter_logits",
    "ode_step",
    "parse_sde_sampler",
    "parse_solver",
    "probability_flow",
    "sample_tokens",
    "solve_ode",
    "solve_ode_trajectory",
    "train_bns",
    "uniform_times",
]
