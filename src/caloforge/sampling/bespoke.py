"""Bespoke non-stationary (BNS) solvers, trained for one frozen velocity field
(CaloDREAM §3.4, Eq. 15-17, Tab. 5).

An N-step BNS solver integrates dx/dt = f(x, t) from t = 0 to 1 on a learned grid
0 = t_0 < t_1 < ... < t_N = 1 with the update (Eq. 15)

    x_{i+1} = a_i x_0 + sum_{j <= i} b_ij v_j,    v_j = f(x_j, t_j),

caching every v_j, so that a solve costs exactly N evaluations of f. Euler is the special
case a_i = 1, b_ij = 1/N, uniform t_i, which is where training starts; explicit Runge-Kutta
methods are other members of the family.

Training (:func:`train_bns`) fits a, b and the t_i to reference trajectories computed by a
precise fixed-step solver under ``no_grad``, with one of two losses:

* global truncation error, GTE (Eq. 16): mean[(x_ref(1) - x_N)^2], backpropagating
  through the N evaluations of f;
* local truncation error, LTE (Eq. 17): mean over the batch and elements of
  sum_i [x_ref(t_{i+1}) - (a_i x_0 + sum_{j<=i} b_ij v_ref(t_j))]^2, with every velocity
  taken on the reference trajectory; all N steps are computed in one parallel pass and
  nothing is backpropagated through f.

The reference for the LTE is needed at the solver's *current*, learnable t_i. It is
computed once per batch on the reference solver's uniform grid, keeping the states x_k
and the velocities v_k = f(x_k, s_k) there (the first stage of every explicit Runge-Kutta
step evaluates f at exactly (x_k, s_k), so these come at the cost of one extra evaluation
at t = 1). Between grid points x_ref(t) is the cubic Hermite interpolant of (x_k, v_k):
fourth-order accurate, and differentiable in t, its derivative standing in for
v_ref(t) = f(x_ref(t), t) at the interior t_j (third-order accurate, with no evaluations of f
at the moving t_j). So the LTE's gradient reaches the t_i through both the targets and
the velocities.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .ode import ode_step
from .solvers import FixedStepSolver, parse_solver

__all__ = ["BNS_LOSSES", "BNSSolver", "hermite_interpolate", "reference_trajectory", "train_bns"]

#: the two training losses: "global" (GTE, Eq. 16) and "local" (LTE, Eq. 17)
BNS_LOSSES = ("global", "local")

VectorField = Callable[..., Tensor]
#: ``sample_x0_and_cond(batch_size, generator) -> (x0, cond)``
BatchSampler = Callable[[int, torch.Generator | None], tuple[Tensor, Mapping[str, Any]]]


class BNSSolver(nn.Module):
    """An N-step bespoke non-stationary solver (CaloDREAM Eq. 15), initialised to Euler.

    Parameters (all trainable, N(N+5)/2 - 1 in total):

    * ``a`` (N,): the weight of x_0 in each step;
    * ``b`` (N(N+1)/2,): the lower triangle of b_ij, j <= i, row by row;
    * ``time_logits`` (N-1,): the grid increments are softmax([time_logits, 0]) (mixed
      with a small uniform floor, see :meth:`times`), whose cumulative sums give
      0 < t_1 < ... < t_{N-1} < t_N = 1 for any parameter values (the last logit is
      fixed at 0 because a softmax ignores a common shift).

    The paper counts N(N+5)/2 + 1 parameters, i.e. all N + 1 times; with t_0 = 0 and
    t_N = 1 fixed by the boundary conditions only N - 1 are free, which is this count.

    The solver is an ordinary module: its state travels in ``state_dict()`` (and so in a
    safetensors checkpoint); :meth:`from_state_dict` rebuilds one of the right size.
    """

    #: shortest step as a fraction of the uniform step 1/N
    MIN_STEP_FRACTION = 1e-3

    def __init__(self, n_steps: int) -> None:
        super().__init__()
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise ConfigError(f"BNSSolver: n_steps must be an int >= 1, got {n_steps!r}")
        self._n_steps = n_steps
        self.time_logits = nn.Parameter(torch.zeros(n_steps - 1))
        self.a = nn.Parameter(torch.ones(n_steps))
        self.b = nn.Parameter(torch.full((n_steps * (n_steps + 1) // 2,), 1.0 / n_steps))

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor]) -> BNSSolver:
        """A solver with the size and values stored in ``state`` (from :meth:`state_dict`)."""
        if "a" not in state:
            raise ConfigError(f"not a BNS solver state: keys {sorted(state)}")
        solver = cls(int(state["a"].numel()))
        solver.load_state_dict(dict(state))
        return solver

    # --- what every solver has -------------------------------------------------------

    @property
    def n_steps(self) -> int:
        return self._n_steps

    @property
    def nfe(self) -> int:
        """Evaluations of f per solve: one per step, thanks to the velocity cache."""
        return self._n_steps

    @property
    def name(self) -> str:
        return f"bns-{self._n_steps}"

    def n_parameters(self) -> int:
        """Number of learnable values, N(N+5)/2 - 1 (see the class docstring)."""
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"n_steps={self._n_steps}"

    # --- the parameterisation --------------------------------------------------------

    def times(self) -> Tensor:
        """The grid t_0 = 0 < t_1 < ... < t_N = 1, shape (N + 1,).

        Every step is at least ``MIN_STEP_FRACTION`` of the uniform step 1/N long, so that
        the grid stays strictly increasing in floating point whatever the logits.
        """
        n = self._n_steps
        logits = torch.cat([self.time_logits, self.time_logits.new_zeros(1)])
        m = self.MIN_STEP_FRACTION
        steps = (1.0 - m) * torch.softmax(logits, dim=0) + m / n
        t = torch.cumsum(steps, dim=0)
        # dividing by the last sum makes t_N exactly 1 despite rounding in the softmax
        return torch.cat([t.new_zeros(1), t / t[-1]])

    def coefficients(self) -> tuple[Tensor, Tensor]:
        """``(a, B)``: a (N,) and B (N, N) lower triangular, B[i, j] = b_ij."""
        n = self._n_steps
        rows, cols = torch.tril_indices(n, n, device=self.b.device)
        B = self.b.new_zeros(n, n).index_put((rows, cols), self.b)
        return self.a, B

    # --- solving ---------------------------------------------------------------------

    def solve(
        self, f: VectorField, x0: Tensor, *, t0: float = 0.0, t1: float = 1.0, **cond: Any
    ) -> Tensor:
        """x_N from x_0 by Eq. 15 with exactly N evaluations of ``f(x, t, **cond)``.

        x0 (...) -> (...). t is passed to f as a 0-d tensor of x0's dtype; it carries a
        gradient to the solver's time parameters. Gradients are never switched off here.
        A BNS solver is trained for the interval [0, 1] only.
        """
        if (t0, t1) != (0.0, 1.0):
            raise ConfigError(f"{self.name} is trained for t from 0 to 1, not {t0} to {t1}")
        ts = self.times().to(device=x0.device, dtype=x0.dtype)
        a, B = (p.to(device=x0.device, dtype=x0.dtype) for p in self.coefficients())
        vs: list[Tensor] = []
        x = x0
        for i in range(self._n_steps):
            vs.append(f(x, ts[i], **cond))
            # a running sum rather than one contraction over stacked velocities: the
            # backward pass then keeps N velocity tensors, not O(N^2) stacked copies
            x = a[i] * x0
            for j in range(i + 1):
                x = x + B[i, j] * vs[j]
        return x

    def apply_velocities(self, x0: Tensor, velocities: Tensor) -> Tensor:
        """All N steps of Eq. 15 from given velocities, in one pass.

        x0 (...), velocities (N, ...) = [v_0, ..., v_{N-1}] -> (N, ...), entry i being
        a_i x_0 + sum_{j<=i} b_ij v_j (the prediction of x_{i+1}).
        """
        a, B = (p.to(device=x0.device, dtype=x0.dtype) for p in self.coefficients())
        extra = [1] * x0.dim()
        flat = velocities.reshape(self._n_steps, -1)
        return a.view(-1, *extra) * x0 + (B @ flat).view(velocities.shape)


# --- references ----------------------------------------------------------------------


class _FirstCall:
    """Wraps f and keeps the value of its first call after each :meth:`arm`."""

    def __init__(self, f: VectorField) -> None:
        self.f = f
        self.value: Tensor | None = None
        self._armed = False

    def arm(self) -> None:
        self._armed = True

    def __call__(self, x: Tensor, t: Tensor, **cond: Any) -> Tensor:
        out = self.f(x, t, **cond)
        if self._armed:
            self.value, self._armed = out, False
        return out


def reference_trajectory(
    f: VectorField, x0: Tensor, reference: FixedStepSolver, **cond: Any
) -> tuple[Tensor, Tensor]:
    """States and velocities of a fixed-step solve from t = 0 to 1 on its uniform grid.

    Returns ``(xs, vs)``, both (K + 1, *x0.shape) for K = ``reference.n_steps``, with
    vs[k] = f(xs[k], k / K). Costs ``reference.nfe + 1`` evaluations: the velocity at
    each grid point is the first stage of the step that leaves it. Call under no_grad.
    """
    ts = reference.times(0.0, 1.0).to(device=x0.device, dtype=x0.dtype)
    rec = _FirstCall(f)
    xs, vs = [x0], []
    x = x0
    for k in range(reference.n_steps):
        rec.arm()
        x = ode_step(rec, x, ts[k], ts[k + 1] - ts[k], reference.method, **cond)
        assert rec.value is not None
        vs.append(rec.value)
        xs.append(x)
    vs.append(f(x, ts[-1], **cond))
    return torch.stack(xs), torch.stack(vs)


def hermite_interpolate(xs: Tensor, vs: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Cubic Hermite interpolation of a trajectory on the uniform grid k / K, k = 0..K.

    xs, vs (K + 1, ...) states and their time derivatives; t (M,) in [0, 1].
    Returns ``(x(t), dx/dt(t))``, both (M, ...), differentiable with respect to t.
    """
    K = xs.shape[0] - 1
    k = torch.clamp((t.detach() * K).floor().long(), 0, K - 1)
    u = (t - k.to(t.dtype) / K) * K
    u = u.view(-1, *([1] * (xs.dim() - 1)))
    h = 1.0 / K
    x_a, x_b, v_a, v_b = xs[k], xs[k + 1], vs[k], vs[k + 1]
    u2, u3 = u * u, u * u * u
    x = (
        (2 * u3 - 3 * u2 + 1) * x_a
        + (u3 - 2 * u2 + u) * h * v_a
        + (-2 * u3 + 3 * u2) * x_b
        + (u3 - u2) * h * v_b
    )
    dx = (
        (6 * u2 - 6 * u) * x_a / h
        + (3 * u2 - 4 * u + 1) * v_a
        + (-6 * u2 + 6 * u) * x_b / h
        + (3 * u2 - 2 * u) * v_b
    )
    return x, dx


# --- training ------------------------------------------------------------------------


class _Batch:
    """One batch with what its loss needs from the reference (computed once)."""

    def __init__(
        self, f: VectorField, x0: Tensor, cond: Mapping[str, Any], ref: FixedStepSolver,
        loss: str,
    ) -> None:
        self.x0, self.cond = x0, dict(cond)
        with torch.no_grad():
            if loss == "local":
                self.xs, self.vs = reference_trajectory(f, x0, ref, **self.cond)
                self.x1 = self.xs[-1]
            else:
                self.xs = self.vs = None
                self.x1 = ref.solve(f, x0, **self.cond)

    def gte(self, solver: BNSSolver, f: VectorField) -> Tensor:
        return (self.x1 - solver.solve(f, self.x0, **self.cond)).square().mean()

    def lte(self, solver: BNSSolver) -> Tensor:
        ts = solver.times().to(device=self.x0.device, dtype=self.x0.dtype)
        x_ref, v_ref = hermite_interpolate(self.xs, self.vs, ts)
        pred = solver.apply_velocities(self.x0, v_ref[:-1])
        return (x_ref[1:] - pred).square().sum(0).mean()

    def loss(self, kind: str, solver: BNSSolver, f: VectorField) -> Tensor:
        return self.lte(solver) if kind == "local" else self.gte(solver, f)


def _freeze(f: VectorField) -> list[nn.Parameter]:
    """Switch off gradients of the parameters of f's module; returns those to restore."""
    module = f if isinstance(f, nn.Module) else getattr(f, "__self__", None)
    if not isinstance(module, nn.Module):
        return []
    changed = [p for p in module.parameters() if p.requires_grad]
    for p in changed:
        p.requires_grad_(False)
    return changed


def train_bns(
    solver: BNSSolver,
    velocity_fn: VectorField,
    sample_x0_and_cond: BatchSampler,
    *,
    loss: str = "global",
    reference: str | FixedStepSolver = "midpoint-100",
    lr: float = 1e-3,
    batch_size: int = 100,
    max_iters: int = 5000,
    patience: int = 200,
    val_batches: int = 1,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Fit a BNS solver to a frozen velocity field (CaloDREAM §3.4, defaults from Tab. 5).

    Args:
        solver: the solver to train in place (start from a fresh one, i.e. Euler).
        velocity_fn: ``f(x, t, **cond)``; t arrives as a 0-d tensor and, for the global
            loss, f must be differentiable in x and t. Only the solver's parameters are
            optimised; when f is an ``nn.Module`` or a bound method of one, its parameters'
            ``requires_grad`` is switched off during training and restored afterwards.
            Other callables must not expose trainable parameters to autograd (freeze
            them), else their ``.grad`` fills up (they are still not updated).
        sample_x0_and_cond: ``(batch_size, generator) -> (x0, cond)``: noise x0
            (batch_size, ...) and the keyword conditions of f for that batch (e.g. E_inc
            and layer energies drawn from the energy network).
        loss: "global" (GTE, Eq. 16) or "local" (LTE, Eq. 17).
        reference: the precise fixed-step solver for x_ref (Tab. 5: midpoint, 100 steps).
        lr: Adam learning rate.
        batch_size: samples per iteration.
        max_iters: most optimiser steps.
        patience: stop after this many steps without a lower validation loss.
        val_batches: held-out batches, drawn once before training with their references,
            on which the chosen loss is measured after every step; the state with the
            lowest value (the Euler start included) is kept. With 0, the training loss
            of each batch decides instead (the paper does not say which loss its
            patience watches).
        generator: passed to ``sample_x0_and_cond``.
        progress: show a progress bar.

    Returns:
        history: ``loss`` (training loss per step), ``val_loss`` (entry 0 at the start,
        entry k after step k; empty with ``val_batches=0``), ``val_gte`` (the global
        error on the held-out batches, likewise, whatever the loss), ``best_iter``
        (steps taken by the kept state), ``best_loss``, ``n_iters``, ``stop_reason``
        ("patience", "max_iters" or "non-finite loss").
    """
    if loss not in BNS_LOSSES:
        raise ConfigError(f"train_bns: loss must be one of {BNS_LOSSES}, got {loss!r}")
    for name, value, low in (
        ("batch_size", batch_size, 1), ("max_iters", max_iters, 1),
        ("patience", patience, 1), ("val_batches", val_batches, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"train_bns: {name} must be an int >= {low}, got {value!r}")
    if not lr > 0:
        raise ConfigError(f"train_bns: lr must be > 0, got {lr!r}")
    ref = parse_solver(reference)
    if not isinstance(ref, FixedStepSolver):
        raise ConfigError(f"train_bns: the reference must be a fixed-step solver, got {ref.name}")

    def draw() -> _Batch:
        x0, cond = sample_x0_and_cond(batch_size, generator)
        return _Batch(velocity_fn, x0, cond, ref, loss)

    history: dict[str, Any] = {"loss": [], "val_loss": [], "val_gte": []}
    frozen = _freeze(velocity_fn)
    try:
        val = [draw() for _ in range(val_batches)]

        def validate() -> float:
            with torch.no_grad():
                own = [float(b.loss(loss, solver, velocity_fn)) for b in val]
                gte = own if loss == "global" else [float(b.gte(solver, velocity_fn)) for b in val]
            history["val_loss"].append(sum(own) / len(own))
            history["val_gte"].append(sum(gte) / len(gte))
            return history["val_loss"][-1]

        best, best_iter = (validate() if val else math.inf), 0
        best_state = copy.deepcopy(solver.state_dict())
        opt = torch.optim.Adam(solver.parameters(), lr=lr)
        stop_reason, it = "max_iters", 0
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=max_iters, desc=f"train {solver.name} ({loss})")
        for it in range(1, max_iters + 1):
            batch = draw()
            value = batch.loss(loss, solver, velocity_fn)
            history["loss"].append(float(value.detach()))
            if not math.isfinite(history["loss"][-1]):
                stop_reason, it = "non-finite loss", it - 1
                break
            if not val and history["loss"][-1] < best:
                # the training loss scores the parameters *before* this step
                best, best_iter = history["loss"][-1], it - 1
                best_state = copy.deepcopy(solver.state_dict())
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
            if val:
                score = validate()
                if score < best:
                    best, best_iter = score, it
                    best_state = copy.deepcopy(solver.state_dict())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{history['loss'][-1]:.3g}", best=f"{best:.3g}")
            if it - best_iter >= patience:
                stop_reason = "patience"
                break
        if bar is not None:
            bar.close()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    solver.load_state_dict(best_state)
    history.update(best_iter=best_iter, best_loss=best, n_iters=it, stop_reason=stop_reason)
    return history
