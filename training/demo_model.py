"""The built-in demo model: the ``demo_retrieval`` then ``demo`` presets trained once on the shapes data, cached.

``demo_models()`` is what the app falls back to when no model is configured: the classifier `ensure_demo_model`
caches, the retrieval model it is built on, and a captioner on the same encoders. It trains the two presets twice,
with stage-1 seeds 0 and 1, and serves the ensemble of the two (`training.ensemble`): single runs differ by points
of held-out accuracy with the stage-1 seed, their average is steadier and better (README, "The demo model").
Training happens in a folder beside the cache entry that replaces it once complete, so an interrupted run never
leaves a half-written model where the next call would pick it up.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mm_hub._files import folder_written_whole, write_text
from mm_hub.paths import cache_dir as default_cache_dir

from .config import TrainConfig, read_preset
from .data import load_source
from .ensemble import build_ensemble

DEMO_PRESET = Path(__file__).parent / "configs" / "demo_classifier.yaml"
STAGE1_PRESET = Path(__file__).parent / "configs" / "demo_retrieval.yaml"
CAPTIONER_PRESET = Path(__file__).parent / "configs" / "demo_captioner.yaml"
DEMO_FOLDER = "demo-model"
# Inside DEMO_FOLDER: the first member's stage 1 (a dual encoder the app searches with), and the captioner.
RETRIEVAL_FOLDER, CAPTIONER_FOLDER = "retrieval", "captioner"
REQUIRED_FILES = ("config.json", "model.safetensors", "processor_config.json", "eval_results.json")
FINGERPRINT_FILE = "demo_fingerprint.txt"
STAGE1_SEEDS = (0, 1)  # one ensemble member per stage-1 seed; stage 2 keeps the preset's seed


def demo_fingerprint() -> str:
    """Hash of what the cached demo model depends on: both presets, the member seeds, the model's code and the data
    generator. A cache entry made by an older mm_hub (different layers, weight names or data) is retrained instead
    of reused."""
    import mm_hub.model.configuration_mm_hub as configuration
    import mm_hub.model.fusion_mm_hub as fusion
    import mm_hub.model.generation_mm_hub as generation
    import mm_hub.model.modeling_mm_hub as modeling
    import mm_hub.shapes as shapes

    digest = hashlib.sha256()
    for module in (configuration, fusion, modeling, generation, shapes):
        digest.update(Path(module.__file__).read_bytes())
    for preset in (STAGE1_PRESET, DEMO_PRESET, CAPTIONER_PRESET):
        digest.update(preset.read_bytes())
    digest.update(repr(STAGE1_SEEDS).encode())
    return digest.hexdigest()


def demo_config(
    output_dir: str | os.PathLike, progress: bool = True, preset: Path = DEMO_PRESET, **overrides: Any
) -> TrainConfig:
    """A demo preset (stage 2 by default) as a `TrainConfig` writing to ``output_dir``; ``overrides`` replace values
    by field name (ValueError for an unknown one)."""
    return read_preset(preset).replace(output_dir=str(output_dir), progress=progress, **overrides)


def stage_configs(
    stage1_dir: Path, stage2_dir: Path, progress: bool = True, stage1: dict | None = None, **stage2: Any
) -> tuple[TrainConfig, TrainConfig]:
    """The two presets of one run: stage 1 (``demo_retrieval``) into ``stage1_dir``, then stage 2 (``demo``) from its
    encoders into ``stage2_dir``; ``stage1`` / ``stage2`` replace preset values."""
    first = demo_config(stage1_dir, progress, STAGE1_PRESET, **(stage1 or {}))
    return first, demo_config(stage2_dir, progress, init_encoders_from=str(stage1_dir), **stage2)


def train_stages(
    stage1_dir: Path, stage2_dir: Path, progress: bool = True, stage1: dict | None = None, **stage2: Any
) -> dict[str, float]:
    """Train the demo recipe (`stage_configs`) in this process: stage 1, unless ``stage1_dir`` already holds a
    trained model (runs sharing a stage 1 reuse it), then stage 2; returns stage 2's eval metrics."""
    from .train import run_training

    first, second = stage_configs(stage1_dir, stage2_dir, progress, stage1, **stage2)
    if not (Path(stage1_dir) / "config.json").is_file():
        run_training(first)
    return run_training(second)


def train_members(
    work: Path, progress: bool = True, stage1: dict | None = None, captioner: dict | None = None, **stage2: Any
) -> list[Path]:
    """Train one member per stage-1 seed of `STAGE1_SEEDS` under ``work`` (its stage 1, then its stage 2), and the
    captioner (`CAPTIONER_PRESET`, into ``work / "captioner"``) on the last member's stage 1, preset values replaced
    by ``stage1`` / ``stage2`` / ``captioner``; returns the members' stage-2 folders.

    With two cores or more, the members train side by side, each in one process with one thread (only the first
    shows progress bars), the captioner in a third once its stage 1 is trained, while this process renders the
    shapes data of stage 2 and of the captioner into the datasets cache."""
    from .train import run_training

    chains = [
        list(stage_configs(work / f"stage1-seed{seed}", work / f"member-stage1-seed{seed}", progress and index == 0,
                           {**(stage1 or {}), "seed": seed}, **stage2))
        for index, seed in enumerate(STAGE1_SEEDS)
    ]
    chains.append([demo_config(work / CAPTIONER_FOLDER, False, CAPTIONER_PRESET,
                               init_encoders_from=str(chains[-1][0].train.output_dir), **(captioner or {}))])
    cores = os.cpu_count() or 1
    if cores < len(STAGE1_SEEDS):
        for config in (config for chain in chains for config in chain):
            run_training(config)
    else:
        with ThreadPoolExecutor(1) as pool:
            # Render the shapes data once, here, while the members train stage 1: they (and the ensemble's
            # evaluation) then read it from the datasets cache instead of each rendering it again.
            rendered = [pool.submit(load_source, config) for config in (chains[0][1], chains[-1][0])
                        if config.data.dataset == "shapes"]
            run_side_by_side(chains)
            for data in rendered:
                data.result()
    return [Path(chain[1].train.output_dir) for chain in chains[: len(STAGE1_SEEDS)]]


def run_side_by_side(chains: list[list[TrainConfig]]) -> None:
    """Run every chain of configs at once, each chain in its own Python process that runs its configs one after the
    other, as ``python -m training.train --config`` would (each recipe is saved beside its output folder); wait for
    them all.

    Separate interpreters, rather than `multiprocessing`, so that nothing of this process is copied (torch's thread
    pools) or re-imported (a caller's script); one per chain, so that a chain pays for its imports (about 10 s)
    once. A chain whose first config starts from the encoders another chain trains (``init_encoders_from``) starts
    once that model is saved. A chain's output goes to the terminal only if its first config has ``progress``.
    Raises RuntimeError naming the recipe that failed, with the end of its output."""
    root = Path(__file__).resolve().parents[1]  # where `training` is importable from, installed or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    script = "import sys\nfrom training.train import main\nfor recipe in sys.argv[1:]:\n    main(['--config', recipe])"
    trained_here = {Path(config.train.output_dir) for chain in chains for config in chain}
    broken = threading.Event()  # set when a chain fails: the chains waiting for its model stop waiting

    def run_chain(chain: list[TrainConfig]) -> None:
        source = chain[0].encoders.init_encoders_from
        needs = Path(source) if source and Path(source) in trained_here else None
        while needs is not None and not (needs / "training_info.json").is_file():  # written last: the model is whole
            if broken.is_set():
                return  # the run it needs failed; that chain raises the error
            time.sleep(0.5)
        recipes = []
        for config in chain:
            recipes.append(Path(config.train.output_dir).with_name(Path(config.train.output_dir).name + ".yaml"))
            config.save(recipes[-1])
        with tempfile.TemporaryFile() as log:
            output = None if not chain[0].train.disable_tqdm else log
            command = [sys.executable, "-c", script, *map(str, recipes)]
            if subprocess.run(command, env=env, stdout=output, stderr=output, check=False).returncode != 0:
                failed = next((recipe for recipe, config in zip(recipes, chain)
                               if not (Path(config.train.output_dir) / "config.json").is_file()), recipes[-1])
                log.seek(0)
                broken.set()
                raise RuntimeError(f"python -m training.train --config {failed} failed:\n"
                                   + log.read().decode(errors="replace")[-3000:])

    with ThreadPoolExecutor(len(chains)) as pool:
        for run in [pool.submit(run_chain, chain) for chain in chains]:
            run.result()  # re-raises a chain's error once every chain has ended


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds a finished demo model made by this mm_hub (files and `demo_fingerprint` match)."""
    stamp = folder / FINGERPRINT_FILE
    return (
        all((folder / sub / name).is_file() for sub in ("", RETRIEVAL_FOLDER, CAPTIONER_FOLDER) for name in REQUIRED_FILES)
        and stamp.is_file()
        and stamp.read_text().strip() == demo_fingerprint()
    )


def ensure_demo_model(cache_dir: Path | None = None, progress: bool = True, **overrides: Any) -> Path:
    """Folder of the trained demo model + processor, training it once (a few minutes on a CPU) when missing.

    Args:
        cache_dir: where the ``demo-model`` folder lives; default ``mm_hub.paths.cache_dir()``.
        progress: show the training progress bar in the terminal.
        **overrides: stage-2 preset values to change (e.g. ``max_steps=2`` for a smoke test), ``stage1``: a dict
            of stage-1 values (``seed`` excepted: each member has its own), and ``captioner``: a dict of captioner
            values; a model trained with overrides is cached like the real one, so use a separate ``cache_dir``.

    Returns:
        The folder; load it with ``AutoModel.from_pretrained`` / ``pipeline(model=folder)``. Its ``retrieval``
        subfolder holds the first member's stage 1, a retrieval model (dual encoder) of its own, and ``captioner``
        the generation model trained on the last member's stage 1.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / DEMO_FOLDER
    if is_complete(target):
        return target
    if progress:
        print(f"Training the mm_hub demo model into {target} (once; later runs reuse it).", flush=True)
    with folder_written_whole(target) as work:
        members = train_members(work / "runs", progress, **overrides)
        build_ensemble(members, work / "model", progress=progress)
        for path in (work / "model").iterdir():  # the model's files only, not the runs behind it
            path.rename(work / path.name)
        for folder, run in ((RETRIEVAL_FOLDER, f"stage1-seed{STAGE1_SEEDS[0]}"), (CAPTIONER_FOLDER, CAPTIONER_FOLDER)):
            (work / folder).mkdir()
            for path in (work / "runs" / run).iterdir():  # the model's files, not its checkpoints
                if path.is_file():
                    path.rename(work / folder / path.name)
        shutil.rmtree(work / "runs")
        write_text(work / FINGERPRINT_FILE, demo_fingerprint() + "\n")
    return target


def demo_models(cache_dir: Path | None = None, progress: bool = True) -> list[Path]:
    """The folders of the models the app serves when none is configured: the demo classifier, the retrieval model
    of its stage 1 and the captioner (`ensure_demo_model`, trained once)."""
    folder = ensure_demo_model(cache_dir, progress)
    return [folder, folder / RETRIEVAL_FOLDER, folder / CAPTIONER_FOLDER]
