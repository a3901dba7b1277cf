"""Create or update a Gradio Space that serves a pushed mm_hub model.

    python -m training.space --model your-name/mm-hub-demo --space-id your-name/mm-hub-demo-app [--revision REV]
                             [--private] [--commit-message M]
    python -m training.space --model org/classifier --model org/retrieval@v2 --space-id org/app   # side by side

Uploads, in one commit: `app.py`, the `mm_hub/` (and `training/`) modules app.py imports (found by following its
imports), `requirements.txt`, `space_config.json` (the app manifest, {"models": [{"model": ..., "revision": ...}]},
which app.py reads to pick its models) and a README.md with the Space YAML header (sdk gradio, sdk_version,
python_version, app_file, models: [the models]). Modules the previous commit had but the app no longer needs are
deleted. Needs a write token.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from importlib.metadata import version
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, SpaceCard, SpaceCardData
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

from mm_hub.cli import run
from mm_hub.hub import HubAuthError, check_repo_id, hub_errors, resolve_token
from mm_hub.loading import SPACE_CONFIG, parse_model_spec

ROOT = Path(__file__).resolve().parents[1]
LOCAL_PACKAGES = ("mm_hub", "training")
# Transformers 5 needs Python 3.11+; the Space runs the version this project is developed and tested on.
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}" if sys.version_info >= (3, 11) else "3.11"


def _module_file(root: Path, module: str) -> Path | None:
    path = root.joinpath(*module.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def _imports(root: Path, file: Path) -> set[str]:
    """Modules of LOCAL_PACKAGES that `file` imports anywhere (top level or inside functions)."""
    package = ".".join(file.relative_to(root).parent.parts)  # what `from .x import y` is relative to
    found = set()
    for node in ast.walk(ast.parse(file.read_text(), filename=str(file))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            # `from pkg import name` imports pkg, and pkg.name when that is a module.
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in LOCAL_PACKAGES:
                parts = name.split(".")
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {module for module in found if _module_file(root, module)}


def app_modules(root: str | Path = ROOT, app_file: str = "app.py") -> list[str]:
    """Repo-relative paths of app.py and every local module it needs, following imports transitively, plus the
    YAML presets of `training/` when the app imports it (the demo model is trained from them)."""
    root = Path(root)
    if not (root / app_file).is_file():
        raise ValueError(f"no {app_file} in {root}: run the Space command from a checkout of the mm_hub repository")
    todo, seen = [root / app_file], set()
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        todo += [_module_file(root, module) for module in _imports(root, file)]
    paths = {file.relative_to(root).as_posix() for file in seen}
    if any(path.startswith("training/") for path in paths):
        paths.update(p.relative_to(root).as_posix() for p in (root / "training" / "configs").glob("*.yaml"))
    return sorted(paths)


Models = list[tuple[str, "str | None"]]  # (model id, revision) pairs, in the app's order


def _pinned(model: str, revision: str | None) -> str:
    return f"`{model}`" + (f" at revision `{revision}`" if revision else "")


def space_card(models: Models, space_id: str) -> SpaceCard:
    """The Space README: YAML header (sdk, sdk_version, python_version, app_file, models) and a short body."""
    data = SpaceCardData(
        title=space_id.split("/")[-1], sdk="gradio", sdk_version=version("gradio"), python_version=PYTHON_VERSION,
        app_file="app.py", models=[model for model, _ in models], license="apache-2.0", emoji="🖼️",
        colorFrom="indigo", colorTo="green", pinned=False,
        short_description="Classify, explain, describe and search image + text",
    )
    served = ", ".join(f"[{_pinned(model, revision)}](../../{model})" for model, revision in models)
    body = (
        f"# {space_id.split('/')[-1]}\n\nA Gradio demo of the mm_hub model{'s' if len(models) > 1 else ''} {served}:"
        " each tab (classify and explain, describe, search, recommend) is served by the first model that can.\n\n"
        f"The app reads its models from `{SPACE_CONFIG}`; set the `MM_HUB_MODEL` variable in the Space settings"
        " (comma-separated ids, each optionally `org/name@revision`) to serve others without a new commit.\n"
    )
    return SpaceCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def space_files(models: Models, space_id: str, root: str | Path = ROOT) -> dict[str, bytes]:
    """Every file the Space commit uploads, path -> content."""
    root = Path(root)
    files = {path: (root / path).read_bytes() for path in app_modules(root)}
    files["requirements.txt"] = (root / "requirements.txt").read_bytes()
    manifest = {"models": [{"model": model, "revision": revision} for model, revision in models]}
    files[SPACE_CONFIG] = (json.dumps(manifest, indent=2) + "\n").encode()
    files["README.md"] = str(space_card(models, space_id)).encode()
    return files


def create_space(
    model_id: str | list[str],
    space_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Create (or update) the Gradio Space `space_id` serving `model_id` at `revision`; returns the commit id.

    ``model_id`` may be a list of models served side by side, each ``org/name`` or ``org/name@revision``
    (``revision`` then pins nothing). Checks first that each model exists at its revision (ValueError otherwise,
    with the Hub's answer).
    """
    models = [parse_model_spec(model) for model in ([model_id] if isinstance(model_id, str) else model_id)]
    if revision is not None and len(models) > 1:
        raise ValueError("--revision pins one model; with several, write each as org/name@revision.")
    models = [(model, revision or pinned) for model, pinned in models]
    check_repo_id(space_id)
    token = resolve_token(token, space_id)
    api = HfApi(token=token)
    for model, pinned in models:
        check_repo_id(model)
        with hub_errors(model):
            try:
                api.model_info(model, revision=pinned)
            except (RepositoryNotFoundError, RevisionNotFoundError) as err:
                raise ValueError(f"model {model!r} (revision {pinned or 'main'}) is not on the Hub: push it first"
                                 f" (python -m training.push). Hub answered: {str(err).splitlines()[0]}") from err
    files = space_files(models, space_id)
    with hub_errors(space_id):
        api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        remote = set(api.list_repo_files(space_id, repo_type="space"))
        stale = [p for p in remote - set(files) if p.split("/")[0] in LOCAL_PACKAGES]
        operations: list = [CommitOperationAdd(path, content) for path, content in sorted(files.items())]
        operations += [CommitOperationDelete(path) for path in sorted(stale)]
        names = ", ".join(model + (f"@{pinned}" if pinned else "") for model, pinned in models)
        info = api.create_commit(space_id, operations, commit_message=commit_message or f"Serve {names} with the"
                                 " mm_hub app", repo_type="space")
    return info.oid


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m training.space", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, action="append",
                        help="pushed model repo the Space serves, 'org/name' or 'org/name@revision'; repeat it to "
                        "serve several side by side (a classifier, a retrieval model, a generator)")
    parser.add_argument("--space-id", required=True, help="Space repo to create or update, 'org/name'")
    parser.add_argument("--revision", default=None, help="revision (branch, tag or commit) to pin, with one model")
    parser.add_argument("--private", action="store_true", help="create the Space as private (new Spaces only)")
    parser.add_argument("--commit-message", default=None, help="commit title (default: a generated one)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    """Run the Space command; prints the Space URL and returns the commit id. Raises what `create_space` raises (run
    as a program, `mm_hub.cli.run` makes a user error one line)."""
    args = parse_args(argv)
    commit = create_space(args.model, args.space_id, revision=args.revision, private=args.private,
                          commit_message=args.commit_message)
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    print(f"Space {endpoint}/spaces/{args.space_id} serves {', '.join(args.model)} (commit {commit})")
    return commit


__all__ = ["HubAuthError", "app_modules", "create_space", "space_card", "space_files", "main"]

if __name__ == "__main__":
    run(main)
