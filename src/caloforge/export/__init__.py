"""Portable export of trained generators for use outside Python (docs/export.md).

A pipeline's generator provides ``export_module()`` returning an
:class:`ExportableGenerator`: a deterministic module ``(incident_energy, *noise) ->
voxel energies`` and a description of its random inputs. :func:`export_onnx` turns it
into one self-contained ONNX file. onnx and onnxruntime are needed only here (extra
``onnx``) and are imported when used.
"""

from .onnx import (
    DEFAULT_OPSET,
    VOXEL_ORDERS,
    Agreement,
    ExportError,
    ExportReport,
    export_onnx,
    par04_permutation,
    run_onnx,
    shower_rel_diff,
    verify_onnx,
)
from .spec import ExportableGenerator, NoiseInput

__all__ = [
    "DEFAULT_OPSET",
    "VOXEL_ORDERS",
    "Agreement",
    "ExportError",
    "ExportReport",
    "ExportableGenerator",
    "NoiseInput",
    "export_onnx",
    "par04_permutation",
    "run_onnx",
    "shower_rel_diff",
    "verify_onnx",
]
