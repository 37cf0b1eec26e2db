"""What a pipeline hands to an exporter: a deterministic module and its noise inputs.

A generator that can be exported implements ``export_module() -> ExportableGenerator``.
The module is a pure function of the incident energies and explicit random numbers::

    voxel_energies (N, V) float32 MeV = module(incident_energy (N,) float64 MeV, *noise)

with one tensor per :class:`NoiseInput`, batch first. Everything random inside the
generator (token draws, initial noise of an ODE sampler, ...) must come from these
inputs, so that an exported graph fed the same numbers gives the same showers as the
torch generator.

Iterative samplers describe their loop as a :class:`LoopSpec` (prologue, one step,
epilogue) instead of one module: the exporter then writes the step once inside a loop
of the graph format, rather than the whole unrolled computation (an autoregressive prior
of 140 positions unrolled is 20 000 ONNX nodes and minutes of export). The
token loop of Calo-VQ is one; the fixed-step ODE samplers of CaloDREAM and CaloLatent
fit the same shape: the prologue embeds the condition and takes the Gaussian start from
a ``normal`` noise input, the step advances the state by one solver step (its time from a
constant grid indexed by the step number), the epilogue decodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["ExportableGenerator", "LoopModule", "LoopSpec", "NoiseInput"]


@dataclass(frozen=True)
class NoiseInput:
    """One random input of an exported generator.

    Attributes:
        name: graph input name (``token_uniforms``, ``initial_noise``, ...).
        shape: shape of one shower's numbers (the batch axis comes first and is not
            listed), e.g. ``(140,)``.
        distribution: ``"uniform"`` (independent U[0, 1)) or ``"normal"`` (independent
            N(0, 1)).
        description: what the numbers drive, for the file's metadata and the docs.
        dtype: torch dtype of the input (float32).
    """

    name: str
    shape: tuple[int, ...]
    distribution: Literal["uniform", "normal"]
    description: str = ""
    dtype: torch.dtype = torch.float32

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw the numbers for ``n`` showers: (n, *shape)."""
        draw = torch.rand if self.distribution == "uniform" else torch.randn
        return draw((n, *self.shape), generator=generator, dtype=self.dtype)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (shape with the batch axis as ``"batch"``)."""
        return {"name": self.name, "shape": ["batch", *self.shape],
                "dtype": str(self.dtype).replace("torch.", ""),
                "distribution": self.distribution, "description": self.description}


@dataclass
class LoopSpec:
    """An iterative sampler as prologue, step and epilogue modules.

    With ``C`` context tensors (fixed during the loop) and ``S`` state tensors::

        context..., state... = prologue(incident_energy, *noise)
        for i in range(n_steps):                  # i: 0-d int64 tensor
            state... = step(i, *context, *state)
        voxel_energies = epilogue(incident_energy, *context, *state)

    Every tensor has the batch on one axis (``context_batch_axes`` /
    ``state_batch_axes``: which one; the step number has none). The state keeps its
    shapes through the loop (fixed-size caches, masks instead of growing tensors).
    """

    n_steps: int
    prologue: nn.Module
    step: nn.Module
    epilogue: nn.Module
    context_names: tuple[str, ...]
    state_names: tuple[str, ...]
    context_batch_axes: tuple[int, ...] | None = None
    state_batch_axes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.context_batch_axes is None:
            self.context_batch_axes = (0,) * len(self.context_names)
        if self.state_batch_axes is None:
            self.state_batch_axes = (0,) * len(self.state_names)


class LoopModule(nn.Module):
    """A :class:`LoopSpec` run eagerly: ``forward(incident_energy, *noise)``."""

    def __init__(self, loop: LoopSpec) -> None:
        super().__init__()
        self.loop = loop
        self.prologue, self.step, self.epilogue = loop.prologue, loop.step, loop.epilogue

    def forward(self, incident_energy: torch.Tensor, *noise: torch.Tensor) -> torch.Tensor:
        out = self.prologue(incident_energy, *noise)
        c = len(self.loop.context_names)
        context, state = tuple(out[:c]), tuple(out[c:])
        for i in range(self.loop.n_steps):
            state = tuple(self.step(torch.tensor(i, dtype=torch.long), *context, *state))
        return self.epilogue(incident_energy, *context, *state)


@dataclass
class ExportableGenerator:
    """A generator reduced to a deterministic module (see the module docstring).

    Attributes:
        module: ``forward(incident_energy, *noise) -> voxel energies`` in eval mode, on
            CPU, built from the generator's own networks (no copies of weights); a
            :class:`LoopModule` when ``loop`` is set.
        noise: the random inputs, in the order ``forward`` takes them.
        geometry: the generator's geometry (voxel layout of the output, CaloChallenge
            order).
        pipeline: registered pipeline name (``"calovq"``, ...).
        reference: ``reference(incident_energy, *noise)``: the same showers computed by
            the generator's own sampling code (what an exported graph is checked against).
        metadata: extra key/value strings stored with the exported file.
        loop: the sampler's loop, exported as a loop of the graph format; None: the
            exporter traces ``module`` whole.
    """

    module: nn.Module
    noise: tuple[NoiseInput, ...]
    geometry: Any
    pipeline: str
    reference: Any = None
    metadata: dict[str, str] = field(default_factory=dict)
    loop: LoopSpec | None = None

    def sample_noise(self, n: int, generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, ...]:
        """Random inputs for ``n`` showers, one tensor per :class:`NoiseInput`."""
        return tuple(x.sample(n, generator) for x in self.noise)
