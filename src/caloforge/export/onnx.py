"""ONNX export of trained generators (docs/export.md).

``export_onnx(generator, "model.onnx")`` writes one self-contained graph::

    inputs:  incident_energy (batch,) float64, MeV
             <noise inputs>   (batch, ...) float32, e.g. Calo-VQ's token_uniforms
    output:  voxel_energies   (batch, V) float32, MeV

The generator provides the graph through ``export_module()`` (see
:mod:`caloforge.export.spec`): every random number is a graph input, so the graph fed
the same numbers gives the showers of the torch generator. The voxel order of the
output is the CaloChallenge one (layer, alpha, r; r fastest) or, with
``voxel_order="par04"``, the (r, phi, z) order of GEANT4's Par04 fast-simulation example
(z fastest). The file's ``metadata_props`` describe geometry, units, inputs and outputs.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._version import __version__
from ..errors import CaloforgeError, ConfigError
from .spec import ExportableGenerator

__all__ = [
    "DEFAULT_OPSET",
    "VOXEL_ORDERS",
    "Agreement",
    "ExportError",
    "ExportReport",
    "export_onnx",
    "par04_permutation",
    "run_onnx",
    "shower_rel_diff",
    "verify_onnx",
]

#: output voxel orders: CaloChallenge (layer, alpha, r) and Par04 (r, phi, z)
VOXEL_ORDERS = ("calochallenge", "par04")

#: default ONNX opset: 17 has LayerNormalization; 14+ is needed for the attention export
DEFAULT_OPSET = 17


class ExportError(CaloforgeError):
    """The generator cannot be exported, or the exported graph does not reproduce it."""


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and, when verified, how well it matches."""

    path: str
    pipeline: str
    voxel_order: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    size_bytes: int
    #: comparison with the torch generator, one entry per verification batch
    verified: list[Agreement] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)


def par04_permutation(geometry) -> Tensor:
    """Index P (V,) with ``par04 = calochallenge[:, P]`` for a regular geometry.

    CaloChallenge voxel (z, a, r) sits at (z A + a) R + r; Par04's mesh loops r, then
    phi, then z, so its cell (r, a, z) sits at (r A + a) Z + z. Angular bin a is Par04's
    phi cell a.
    """
    if not getattr(geometry, "is_regular", False):
        raise ConfigError(f"the Par04 voxel order needs a regular (r, phi, z) mesh; geometry "
                          f"{geometry.name!r} is irregular")
    nz, na, nr = geometry.image_shape
    r, a, z = torch.meshgrid(torch.arange(nr), torch.arange(na), torch.arange(nz), indexing="ij")
    return ((z * na + a) * nr + r).reshape(-1)


class _Ordered(nn.Module):
    """The exported module with its output columns permuted."""

    def __init__(self, inner: nn.Module, perm: Tensor | None) -> None:
        super().__init__()
        self.inner = inner
        if perm is None:
            self.perm = None
        else:
            self.register_buffer("perm", perm)

    def forward(self, incident_energy: Tensor, *noise: Tensor) -> Tensor:
        out = self.inner(incident_energy, *noise)
        return out if self.perm is None else out.index_select(1, self.perm)


def _trace(module: nn.Module, args: tuple, input_names: list[str], output_names: list[str],
           dynamic_axes: dict[str, dict[int, str]], opset: int):
    """``module`` traced into an ONNX ModelProto."""
    import onnx

    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer notes that Python-level shape checks are fixed into the graph
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=opset,
                          input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes)
    return onnx.load_from_string(buf.getvalue())


def _renamed(graph, prefix: str, fixed: dict[str, str]):
    """Nodes and initializers of ``graph`` with every value name v -> fixed.get(v,
    prefix + v) (so graphs can be merged without clashes). Traced graphs hold no
    subgraphs; one that does is refused rather than renamed half-way."""
    def name(v: str) -> str:
        return v if v == "" else fixed.get(v, prefix + v)

    nodes = []
    for node in graph.node:
        if any(a.g.node or a.graphs for a in node.attribute):
            raise ExportError(f"cannot merge {node.op_type} node {node.name!r}: it holds a "
                              "subgraph")
        new = type(node)()
        new.CopyFrom(node)
        new.name = prefix + node.name
        del new.input[:]
        new.input.extend(name(v) for v in node.input)
        del new.output[:]
        new.output.extend(name(v) for v in node.output)
        nodes.append(new)
    inits = []
    for init in graph.initializer:
        new = type(init)()
        new.CopyFrom(init)
        new.name = name(init.name)
        inits.append(new)
    return nodes, inits


def _export_loop(loop, example: tuple, names: list[str], perm: Tensor | None, opset: int,
                 state_outputs: tuple[str, ...] = ()):
    """Prologue, ``Loop`` over the step, epilogue: one ONNX graph (see :class:`LoopSpec`);
    ``state_outputs``: final loop states added as graph outputs under their own names."""
    unknown = set(state_outputs) - set(loop.state_names)
    if unknown:
        raise ExportError(f"unknown loop states {sorted(unknown)}; the loop has "
                          f"{', '.join(loop.state_names)}")
    import onnx
    from onnx import TensorProto, helper

    ctx_names = [f"context/{n}" for n in loop.context_names]
    init_names = [f"initial/{n}" for n in loop.state_names]
    final_names = [f"final/{n}" for n in loop.state_names]
    axes = {**{n: {a: "batch"} for n, a in zip(ctx_names, loop.context_batch_axes)},
            **{n: {a: "batch"} for n, a in zip(init_names, loop.state_batch_axes)}}
    with torch.no_grad():
        out = loop.prologue(*example)
    c = len(loop.context_names)
    context, state = tuple(out[:c]), tuple(out[c:])
    pro = _trace(loop.prologue, example, names, ctx_names + init_names,
                 {**{n: {0: "batch"} for n in names}, **axes}, opset)

    step_in = ["step", *ctx_names, *init_names]
    step_out = [f"next/{n}" for n in loop.state_names]
    step_axes = {**axes, **{o: {a: "batch"} for o, a in zip(step_out, loop.state_batch_axes)}}
    step = _trace(loop.step, (torch.tensor(0, dtype=torch.long), *context, *state), step_in,
                  step_out, step_axes, opset)

    with torch.no_grad():
        for i in range(loop.n_steps):
            state = tuple(loop.step(torch.tensor(i, dtype=torch.long), *context, *state))
    epi_module = _Ordered(loop.epilogue, perm)
    epi_in = [names[0], *ctx_names, *final_names]
    epi_axes = {names[0]: {0: "batch"},
                **{n: {a: "batch"} for n, a in zip(ctx_names, loop.context_batch_axes)},
                **{n: {a: "batch"} for n, a in zip(final_names, loop.state_batch_axes)},
                "voxel_energies": {0: "batch"}}
    epi = _trace(epi_module, (example[0], *context, *state), epi_in, ["voxel_energies"],
                 epi_axes, opset)

    keep = {v: v for v in (*names, *ctx_names, *init_names, *final_names, "voxel_energies")}
    pro_nodes, pro_inits = _renamed(pro.graph, "prologue/", keep)
    epi_nodes, epi_inits = _renamed(epi.graph, "epilogue/", keep)
    # the body: iteration number and loop condition first, then the state; the context
    # and the step's weights are read from the outer graph
    body_state = {n: f"loop/in/{s}" for n, s in zip(init_names, loop.state_names)}
    body_out = {n: f"loop/out/{s}" for n, s in zip(step_out, loop.state_names)}
    fixed = {"step": "loop/i", **{n: n for n in ctx_names}, **body_state, **body_out}
    body_nodes, body_inits = _renamed(step.graph, "loop/", fixed)
    body_nodes.append(helper.make_node("Identity", ["loop/cond_in"], ["loop/cond_out"]))
    types = {vi.name: vi.type for vi in step.graph.input}
    out_types = {vi.name: vi.type for vi in step.graph.output}

    def value_info(name: str, type_proto):
        vi = onnx.ValueInfoProto()
        vi.name = name
        vi.type.CopyFrom(type_proto)
        return vi

    body_inputs = [helper.make_tensor_value_info("loop/i", TensorProto.INT64, []),
                   helper.make_tensor_value_info("loop/cond_in", TensorProto.BOOL, [])]
    body_inputs += [value_info(body_state[n], types[n]) for n in init_names]
    body_outputs = [helper.make_tensor_value_info("loop/cond_out", TensorProto.BOOL, [])]
    body_outputs += [value_info(body_out[n], out_types[n]) for n in step_out]
    body = helper.make_graph(body_nodes, "step", body_inputs, body_outputs)
    n_steps = helper.make_tensor("loop/n_steps", TensorProto.INT64, [], [loop.n_steps])
    loop_node = helper.make_node("Loop", ["loop/n_steps", "", *init_names], final_names,
                                 name="loop", body=body)
    extra_nodes, extra_outputs = [], []
    for name in state_outputs:
        i = loop.state_names.index(name)
        extra_nodes.append(helper.make_node("Identity", [final_names[i]], [name]))
        extra_outputs.append(value_info(name, out_types[step_out[i]]))
    graph = helper.make_graph(
        pro_nodes + [loop_node] + epi_nodes + extra_nodes, "caloforge",
        list(pro.graph.input), list(epi.graph.output) + extra_outputs,
        initializer=pro_inits + body_inits + epi_inits + [n_steps])
    model = helper.make_model(graph, opset_imports=list(pro.opset_import))
    model.ir_version = pro.ir_version
    return model


def _io_description(spec: ExportableGenerator) -> tuple[list[dict], list[dict]]:
    inputs = [{"name": "incident_energy", "shape": ["batch"], "dtype": "float64",
               "unit": "MeV", "description": "energy of the incident particle"}]
    inputs += [x.describe() for x in spec.noise]
    outputs = [{"name": "voxel_energies", "shape": ["batch", int(spec.geometry.n_voxels)],
                "dtype": "float32", "unit": "MeV", "description": "energy deposited per voxel"}]
    return inputs, outputs


def _metadata(spec: ExportableGenerator, voxel_order: str, source: str | None,
              inputs: list[dict], outputs: list[dict]) -> dict[str, str]:
    g = spec.geometry
    meta = {
        "producer": "caloforge",
        "caloforge_version": __version__,
        "pipeline": spec.pipeline,
        "geometry_name": str(g.name),
        "geometry": json.dumps(g.to_dict()),
        "n_voxels": str(int(g.n_voxels)),
        "voxel_order": voxel_order,
        "units": "incident_energy: MeV; voxel_energies: MeV",
        "inputs": json.dumps(inputs),
        "outputs": json.dumps(outputs),
    }
    if getattr(g, "is_regular", False):
        nz, na, nr = g.image_shape
        meta["voxel_shape"] = (json.dumps({"r": nr, "phi": na, "z": nz}) if voxel_order == "par04"
                               else json.dumps({"layer": nz, "alpha": na, "r": nr}))
    meta["voxel_index"] = ("(r * n_phi + phi) * n_z + z" if voxel_order == "par04"
                           else "CaloChallenge flat order: (layer, alpha, r), r fastest")
    if source is not None:
        meta["source_model"] = str(source)
    meta.update({f"{spec.pipeline}.{k}": v for k, v in spec.metadata.items()})
    return meta


def export_onnx(generator, path: str | os.PathLike, *, voxel_order: str = "calochallenge",
                opset: int = DEFAULT_OPSET, source: str | None = None,
                verify: bool = True, verify_batches: tuple[int, ...] = (1, 7),
                seed: int = 0, state_outputs: tuple[str, ...] = ()) -> ExportReport:
    """Write ``generator`` as a self-contained ONNX graph to ``path`` (atomically).

    Args:
        generator: a loaded generator with ``export_module()``.
        path: the .onnx file to write.
        voxel_order: ``"calochallenge"`` or ``"par04"``.
        opset: ONNX opset.
        source: model name or checkpoint path, recorded in the metadata.
        verify: run the file in onnxruntime (when installed) on random inputs of
            ``verify_batches`` sizes against the generator's own sampling code.
        seed: of the verification inputs.
        state_outputs: names of loop states to add as extra graph outputs, after
            ``voxel_energies`` (e.g. Calo-VQ's ``("tokens",)``: the sampled sequences), for
            debugging and for checks against the torch sampler.

    Returns:
        :class:`ExportReport`.
    """
    import onnx

    from ..io import atomic_path

    if voxel_order not in VOXEL_ORDERS:
        raise ConfigError(f"voxel_order must be one of {VOXEL_ORDERS}, got {voxel_order!r}")
    if not hasattr(generator, "export_module"):
        raise ExportError(f"{type(generator).__name__} does not support export (it has no "
                          "export_module())")
    spec: ExportableGenerator = generator.export_module()
    perm = par04_permutation(spec.geometry) if voxel_order == "par04" else None
    module = _Ordered(spec.module, perm).eval()
    inputs, outputs = _io_description(spec)
    names = [x["name"] for x in inputs]
    example = (torch.tensor([2e3, 6e4], dtype=torch.float64),
               *spec.sample_noise(2, torch.Generator().manual_seed(seed)))
    with torch.no_grad():
        # one eager call first: modules that build constants lazily on first use (e.g. the
        # resampling matrices) must not compute them inside the trace
        module(*example)
    if spec.loop is not None:
        model = _export_loop(spec.loop, example, names, perm, opset, state_outputs)
    elif state_outputs:
        raise ExportError(f"the {spec.pipeline} exporter has no loop states to output")
    else:
        model = _trace(module, example, names, ["voxel_energies"],
                       {**{n: {0: "batch"} for n in names}, "voxel_energies": {0: "batch"}},
                       opset)
    meta = _metadata(spec, voxel_order, source, inputs, outputs)
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    model.producer_name, model.producer_version = "caloforge", __version__
    onnx.checker.check_model(model)
    with atomic_path(path, suffix=".onnx") as tmp:
        onnx.save(model, tmp)
    report = ExportReport(path=os.fspath(path), pipeline=spec.pipeline, voxel_order=voxel_order,
                          inputs=inputs, outputs=outputs, size_bytes=os.path.getsize(path),
                          metadata=meta)
    if verify:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return report
        report.verified = [verify_onnx(path, spec, n, seed=seed + 1 + i, voxel_order=voxel_order)
                           for i, n in enumerate(verify_batches)]
    return report


def run_onnx(path: str | os.PathLike, incident_energy, *noise, threads: int = 1,
             all_outputs: bool = False):
    """Showers (N, V) from an exported file in onnxruntime (CPU); with ``all_outputs``
    the list of every graph output."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(os.fspath(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    feeds = [np.asarray(incident_energy, dtype=np.float64)]
    feeds += [np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float32)
              for x in noise]
    out = sess.run(None, dict(zip(names, feeds)))
    return out if all_outputs else out[0]


@dataclass
class Agreement:
    """How an exported file's showers compare with the torch generator's.

    Per shower, the relative difference is ||onnx - torch|| / ||torch|| (Euclidean norm
    over the voxels). ``within``: showers with a difference <= ``rtol``. For the shipped
    Calo-VQ model about 1 shower in 100 lands just above 1e-5 (float32 rounding of the
    decoder, as large in torch itself), and about 1 in 400 differs entirely: a token drawn
    at a float32 tie with a boundary of the cumulative distribution (docs/export.md).
    """

    n: int
    within: int
    rtol: float
    #: largest per-shower relative difference
    max_rel_diff: float


def shower_rel_diff(got: Tensor, ref: Tensor) -> Tensor:
    """||got - ref|| / ||ref|| per shower: (N, V), (N, V) -> (N,) (0 for empty showers)."""
    num = (got.double() - ref.double()).norm(dim=1)
    den = ref.double().norm(dim=1)
    return torch.where(den > 0, num / den.clamp_min(1e-300), num)


def verify_onnx(path: str | os.PathLike, spec: ExportableGenerator, n: int, *, seed: int = 0,
                voxel_order: str = "calochallenge", rtol: float = 1e-5) -> Agreement:
    """Compare the file in onnxruntime with the generator's own sampling on ``n`` random
    showers (energies log-uniform in 1 GeV - 1 TeV)."""
    g = torch.Generator().manual_seed(seed)
    e = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(np.log(1e3), np.log(1e6),
                                                              generator=g))
    noise = spec.sample_noise(n, g)
    got = torch.from_numpy(run_onnx(path, e.numpy(), *noise))
    with torch.no_grad():
        ref = spec.reference(e, *noise)
    if voxel_order == "par04":
        ref = ref.index_select(1, par04_permutation(spec.geometry))
    if got.shape != ref.shape:
        raise ExportError(f"exported graph gives shape {tuple(got.shape)}, expected "
                          f"{tuple(ref.shape)}")
    rel = shower_rel_diff(got, ref)
    return Agreement(n=n, within=int((rel <= rtol).sum()), rtol=rtol,
                     max_rel_diff=float(rel.max()) if rel.numel() else 0.0)
