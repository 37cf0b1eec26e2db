"""Samplers that know nothing of networks: token sampling and fixed-step ODE solvers."""

from .ode import ODE_METHODS, ode_step, solve_ode, solve_ode_trajectory, uniform_times
from .tokens import draw_categorical, filter_logits, sample_tokens

__all__ = [
    "ODE_METHODS",
    "draw_categorical",
    "filter_logits",
    "ode_step",
    "sample_tokens",
    "solve_ode",
    "solve_ode_trajectory",
    "uniform_times",
]
