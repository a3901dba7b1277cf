"""Push a trained mm_hub model folder to the Hub: weights, config, processor, remote code, pipeline and model card.

    python -m training.push --model-dir outputs/demo --repo-id your-name/mm-hub-demo [--private] [--revision B]
                            [--commit-message M] [--create-pr] [--onnx DIR]

``--onnx DIR`` adds an export of the model (``python -m training.export``) as the repo's ``onnx/`` folder, and a card
section on running it without torch. Needs a write token (`hf auth login` or HF_TOKEN). Prints the repo URL and the
commit id.
"""

from __future__ import annotations

import argparse
import os

from mm_hub.cli import run
from mm_hub.hub import push_to_hub


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m training.push", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True, help="folder written by training (save_pretrained)")
    parser.add_argument("--repo-id", required=True, help="target model repo, 'org/name'")
    parser.add_argument("--private", action="store_true", help="create the repo as private (new repos only)")
    parser.add_argument("--revision", default=None, help="branch to push to (created when missing); default main")
    parser.add_argument("--commit-message", default=None, help="commit title (default: a generated one)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument("--onnx", default=None, help="an ONNX export of the model to push as its onnx/ folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> str:
    """Run the push; returns the commit id. Raises what `push_to_hub` raises (run as a program, `mm_hub.cli.run`
    makes a user error one line)."""
    args = parse_args(argv)
    commit = push_to_hub(
        args.model_dir,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message,
        create_pr=args.create_pr,
        onnx=args.onnx,
    )
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    print(f"pushed {args.model_dir} to {endpoint}/{args.repo_id} (revision {args.revision or 'main'}) commit {commit}")
    return commit


if __name__ == "__main__":
    run(main)
