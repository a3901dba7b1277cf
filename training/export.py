"""Export a saved or pushed mm_hub model to ONNX, for serving without torch.

    python -m training.export MODEL --out DIR [--quantize int8] [--revision R]

MODEL is a folder or Hub id of any head: a classifier (or ensemble) becomes one graph, a retrieval model an image
graph and a text graph, a generator an encoder graph and a decoder graph with its key/value cache. Each graph is
checked against torch on the spot (max abs difference <= 1e-4). DIR gets the graphs, ``onnx_config.json`` (graphs,
inputs, outputs, opset, versions), the config, the processor's files and ``ort_mm_hub.py``, the runtime that runs
them with onnxruntime alone. ``--quantize int8`` adds ONNX Runtime's dynamic int8 graphs (``*.int8.onnx``), which
the runtime then prefers. Serve it with ``python app.py --model MODEL --runtime onnx --onnx DIR``; push it beside the
model with ``python -m training.push ... --onnx DIR``.
"""

from __future__ import annotations

import argparse
from typing import Any

from mm_hub.cli import run
from mm_hub.export import QUANTIZE_CHOICES, export_onnx


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a saved model folder or a Hub id")
    parser.add_argument("--out", required=True, help="the folder to write (a new or empty one, or an earlier export)")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="the export format (onnx)")
    parser.add_argument("--quantize", default=None, choices=QUANTIZE_CHOICES,
                        help="also write dynamic int8 graphs (ONNX Runtime)")
    parser.add_argument("--revision", default=None, help="branch, tag or commit of a Hub model")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the export; returns what ``onnx_config.json`` says."""
    args = parse_args(argv)
    info = export_onnx(args.model, args.out, quantize=args.quantize, revision=args.revision)
    for name, graph in info["graphs"].items():
        files = " + ".join(filter(None, (graph["file"], graph.get("int8_file"))))
        print(f"{name}: {files} (max abs difference from torch {graph['max_abs_difference_from_torch']:.1e})")
    print(f"exported the {info['task']} model {args.model} to {args.out} (opset {info['opset']})")
    return info


if __name__ == "__main__":
    run(main)
