"""``caloforge export MODEL -o model.onnx``: a self-contained ONNX graph of a generator."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a trained model to ONNX",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a checkpoint directory or shipped model as one ONNX file: "
        "inputs incident_energy (batch,) float64 MeV and the model's random numbers "
        "(e.g. Calo-VQ's token_uniforms (batch, seq_len) float32 U[0,1)), output "
        "voxel_energies (batch, V) float32 MeV. The same random numbers give the showers of "
        "the torch model. Geometry, units, voxel order and input/output descriptions are "
        "stored in the file's metadata. Needs the extra: pip install 'caloforge[onnx]'. "
        "See docs/export.md for calling it from C++ (onnxruntime).",
        epilog="example:\n  caloforge export calovq-ds2-tiny -o calovq.onnx\n"
        "  caloforge export model/ -o model.onnx --voxel-order par04")
    p.add_argument("model", help="checkpoint directory or shipped model name")
    p.add_argument("-o", "--output", required=True, help="output .onnx file")
    p.add_argument("--voxel-order", choices=("calochallenge", "par04"), default="calochallenge",
                   help="calochallenge: (layer, alpha, r), r fastest (default); par04: "
                   "(r, phi, z), z fastest, the mesh order of GEANT4's Par04 example")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 17)")
    p.add_argument("--no-check", action="store_true",
                   help="do not run the file in onnxruntime against the torch model")
    p.add_argument("--no-verify", action="store_true",
                   help="accept a checkpoint whose weights carry no sha256 (hand-made)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import importlib.util

    from ..errors import ConfigError
    from ..io import check_output_path
    from ..pipelines import load_generator

    if importlib.util.find_spec("onnx") is None:
        raise ConfigError("caloforge export needs the onnx package: pip install 'caloforge[onnx]'")
    from ..export import DEFAULT_OPSET, export_onnx

    opset = DEFAULT_OPSET if args.opset is None else args.opset
    if opset < 14:
        raise ConfigError(f"--opset must be >= 14 (attention and LayerNorm export), got {opset}")
    check_output_path(args.output)
    model = load_generator(args.model, verify=not args.no_verify)
    report = export_onnx(model, args.output, voxel_order=args.voxel_order, opset=opset,
                         source=str(args.model), verify=not args.no_check)
    names = ", ".join(f"{x['name']} {tuple(x['shape'])} {x['dtype']}" for x in report.inputs)
    print(f"wrote {report.path} ({report.size_bytes / 1e6:.1f} MB, {report.pipeline}, "
          f"voxel order {report.voxel_order})")
    print(f"  inputs: {names}")
    print(f"  output: voxel_energies ('batch', {report.outputs[0]['shape'][1]}) float32 MeV")
    for a in report.verified:
        print(f"  onnxruntime vs torch, {a.n} shower(s): {a.within} within {a.rtol:g} "
              f"(largest relative difference {a.max_rel_diff:.2g})")
    return 0
