"""What every benchmark's results JSON starts with, and how it is printed and written."""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any


def conditions(module: str, argv: list[str] | None, load_before: tuple[float, ...]) -> dict[str, Any]:
    """The command that ran (``python -m benchmarks.<module> ...``), the machine, torch's default thread count and
    the load averages before (``load_before``, from `os.getloadavg`) and now."""
    import torch

    return {
        "command": f"python -m benchmarks.{module} " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "threads": torch.get_num_threads(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def finish(results: dict[str, Any], out: str | os.PathLike | None) -> dict[str, Any]:
    """Print ``results`` as JSON and, with ``out``, write them there (atomically); returns them."""
    from mm_hub._files import write_json

    print(json.dumps(results, indent=2))
    if out:
        write_json(out, results)
    return results
