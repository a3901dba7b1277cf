"""Export a saved or pushed mm_hub model to ONNX, for serving without torch.

    python -m training.export MODEL --out DIR [--quantize int8 [--calibration-images DIR]] [--revision R]

MODEL is a folder or Hub id of any head: a classifier (or ensemble) becomes one graph, a retrieval model an image
graph and a text graph, a generator an encoder graph and a decoder graph with its key/value cache. Each graph is
checked against torch on the spot (max abs difference <= 1e-4). DIR gets the graphs, ``onnx_config.json`` (graphs,
inputs, outputs, opset, versions), the config, the processor's files and ``ort_mm_hub.py``, the runtime that runs
them with onnxruntime alone. ``--quantize int8`` adds ONNX Runtime's dynamic int8 graphs (``*.int8.onnx``), which
the runtime then prefers; ``--calibration-images`` (a folder of images like the model will see, up to 64 read) also
quantizes the image encoder's convolutions, measured on them, which roughly halves a ResNet's time. Push it beside the
model with ``python -m training.push ... --onnx DIR``; ``python app.py --model MODEL --runtime onnx`` then serves it
(without one, the app exports the model once into its cache).
"""

from __future__ import annotations

import argparse
from pathlib import Path
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
    parser.add_argument("--calibration-images", default=None,
                        help="a folder of images like those the model will see: int8 convolutions calibrated on them")
    parser.add_argument("--revision", default=None, help="branch, tag or commit of a Hub model")
    return parser.parse_args(argv)


MAX_CALIBRATION_IMAGES = 64
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def calibration_images(folder: str | None) -> list[Path] | None:
    """The image files of ``folder`` (sorted, at most `MAX_CALIBRATION_IMAGES`; links are not followed); None for
    no folder. A folder without images is a ValueError."""
    if folder is None:
        return None
    if not Path(folder).is_dir():
        raise ValueError(f"--calibration-images must be a folder of images, got {folder!r}.")
    images = sorted(path for path in Path(folder).iterdir()
                    if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not path.is_symlink())
    if not images:
        raise ValueError(f"{folder} holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
    return images[:MAX_CALIBRATION_IMAGES]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the export; returns what ``onnx_config.json`` says."""
    args = parse_args(argv)
    info = export_onnx(args.model, args.out, quantize=args.quantize, revision=args.revision,
                       calibration_images=calibration_images(args.calibration_images))
    for name, graph in info["graphs"].items():
        files = " + ".join(filter(None, (graph["file"], graph.get("int8_file"))))
        print(f"{name}: {files} (max abs difference from torch {graph['max_abs_difference_from_torch']:.1e})")
    print(f"exported the {info['task']} model {args.model} to {args.out} (opset {info['opset']})")
    return info


if __name__ == "__main__":
    run(main)
