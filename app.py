"""mm_hub Gradio app: classify, explain, describe and search with an image+text model from the Hub or a folder.

    python app.py                                   # the built-in demo model (trained once, then cached)
    python app.py --model org/name --revision main  # a pushed model (or a local folder)
    MM_HUB_MODEL=org/name python app.py             # the same through the environment (as in a Space)

The model is chosen by: ``--model`` > ``$MM_HUB_MODEL`` (with ``$MM_HUB_REVISION``) > ``space_config.json`` beside
this file > the demo model. This file only lays out the UI; the work is done by `mm_hub.predictor.Predictor`.
``demo`` is importable (``import app; app.demo``) and built from the environment on first access.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from mm_hub.examples import example_pairs
from mm_hub.inputs import InputError
from mm_hub.loading import ModelLoadError, resolve_model_source
from mm_hub.predictor import ABLATIONS, Predictor
from training.demo_model import ensure_demo_model

APP_DIR = Path(__file__).resolve().parent
logger = logging.getLogger("mm_hub.app")
# Model calls run one at a time (the CPU's cores go to torch's own threads); others wait in the queue.
CONCURRENCY_LIMIT = 1
MAX_QUEUE = 64
MAX_UPLOAD = "20mb"
NEUTRAL_INPUTS = (
    "*Image only* replaces the text with an empty caption; *text only* replaces the image with a flat image of the "
    "image processor's mean colour (all-zero pixel values after normalisation)."
)


def _warn_about_text(predictor: Predictor, text: Any) -> None:
    """Toasts when the text is longer than the model reads (it is truncated, not refused), and when it holds words
    no training text held (the answer about them is a guess)."""
    dropped = predictor.dropped_tokens(text)
    if dropped:
        gr.Warning(f"The text is longer than this model reads: its last {dropped} tokens were ignored.")
    unseen = predictor.unseen_words(text)
    if unseen:
        shown = ", ".join(f"'{word}'" for word in unseen[:8]) + (f" and {len(unseen) - 8} more" if len(unseen) > 8 else "")
        gr.Warning(f"This model never read {shown} in training: what it says about them is a guess.")


def _user_errors(fn):
    """Turn the predictor's `InputError` (bad image or text) into a `gr.Error` the person sees, logged as one line
    (Gradio would print two tracebacks per refused request)."""

    @functools.wraps(fn)  # keeps the signature, so the API docs name the parameters
    def wrapper(*args: Any) -> Any:
        try:
            return fn(*args)
        except InputError as error:
            logger.info("/%s refused: %s", fn.__name__, error)
            raise gr.Error(str(error), print_exception=False) from None

    return wrapper


def build_demo(predictor: Predictor, examples: list[list[str]] | None = None) -> gr.Blocks:
    """Lay out the Classify / Explain / Describe / Search tabs around ``predictor`` (each shown when the model can do
    it); the queue limits concurrent model calls.

    A request can name any path, so the predictor is confined to files in Gradio's upload folder and the examples'
    folders (`Predictor.allowed_dirs`).
    """
    predictor.allowed_dirs = [gr.utils.get_upload_folder(), *{str(Path(path).parent) for path, _ in examples or []}]
    shared = {"preprocess": False, "concurrency_id": "model", "concurrency_limit": CONCURRENCY_LIMIT}

    def endpoint(available: bool) -> dict[str, Any]:
        """Event settings of a tab's endpoint: listed where the model can serve it, absent from the API otherwise."""
        return {**shared, "api_visibility": "public" if available else "private"}

    @_user_errors
    def classify(image: Any, text: str) -> dict[str, float] | str:
        """Label scores of one (image, text) pair."""
        scores = predictor.classify(image, text)
        _warn_about_text(predictor, text)
        if predictor.problem_type == "regression":
            return ", ".join(f"{label} = {value:.4g}" for label, value in scores.items())
        return scores

    @_user_errors
    def explain(image: Any, text: str) -> tuple[Any, list[tuple[str, float]], list[list[Any]], str]:
        """Heatmap, word importance, ablation table and a one-line summary for one pair."""
        result = predictor.explain(image, text)
        _warn_about_text(predictor, text)
        table = [[label] + [round(result.ablation[name][label], 4) for name in ABLATIONS] for label in predictor.labels]
        tops = ", ".join(f"{name}: **{next(iter(result.ablation[name]))}**" for name in ABLATIONS)
        method = "fusion attention" if result.word_method == "attention" else "leave-one-out (score drop per word)"
        heat = "" if result.heatmap is not None else " This fusion has no image attention, so no heatmap."
        summary = f"Prediction **{result.predicted}**. Top label with {tops}. Word importance: {method}.{heat}"
        return result.heatmap, result.words, table, summary

    def describe(image: Any, question: str, max_new_tokens: float) -> Iterator[str]:
        """What the model writes about the image: a caption, or the answer to the question (streamed)."""
        try:
            if isinstance(question, str) and question.strip():
                _warn_about_text(predictor, question)
            yield from predictor.describe_stream(image, question, max_new_tokens)
        except InputError as error:
            logger.info("/describe refused: %s", error)
            raise gr.Error(str(error), print_exception=False) from None

    @_user_errors
    def search_text(query: str, k: float) -> tuple[list[tuple[Any, str]], list[list[Any]]]:
        """Top-k images for a text query: (image, caption) gallery items, and their (score, caption) table rows."""
        hits = predictor.search_text(query, int(k))
        return [(hit["image"], hit["caption"]) for hit in hits], [[round(hit["score"], 4), hit["caption"]] for hit in hits]

    @_user_errors
    def search_image(image: Any, k: float) -> list[list[Any]]:
        """Top-k texts for an image query, as table rows."""
        return [[round(hit["score"], 4), hit["caption"]] for hit in predictor.search_image(image, int(k))]

    # No usage analytics: the app must start and run on machines without internet access.
    with gr.Blocks(title="mm_hub", analytics_enabled=False) as demo:
        gr.Markdown("# mm_hub · image + text")
        gr.Markdown(predictor.info_markdown(), elem_id="model-info")
        with gr.Tabs():
            with gr.Tab("Classify", visible=predictor.can_classify):
                with gr.Row():
                    with gr.Column():
                        image = gr.Image(type="filepath", sources=["upload", "webcam", "clipboard"], label="Image")
                        text = gr.Textbox(label="Text", lines=2, placeholder="a red circle on the left")
                        button = gr.Button("Classify", variant="primary", elem_id="classify-button")
                    label = gr.Label(num_top_classes=5, label="Prediction", elem_id="prediction")
                button.click(classify, [image, text], label, api_name="classify", **endpoint(predictor.can_classify))
                if examples:
                    gr.Examples(examples, [image, text], label="Examples from the shapes data")
            with gr.Tab("Explain", visible=predictor.can_classify):
                with gr.Row():
                    with gr.Column():
                        ex_image = gr.Image(type="filepath", sources=["upload", "webcam", "clipboard"], label="Image")
                        ex_text = gr.Textbox(label="Text", lines=2)
                        ex_button = gr.Button("Explain", variant="primary")
                    with gr.Column():
                        heatmap = gr.Image(label="Where the text looked in the image (fusion attention)")
                        words = gr.HighlightedText(label="Word importance", combine_adjacent=False)
                summary = gr.Markdown(label="Summary")
                ablation = gr.Dataframe(headers=["label", *ABLATIONS], label="Modality ablation", interactive=False)
                gr.Markdown(NEUTRAL_INPUTS)
                ex_button.click(explain, [ex_image, ex_text], [heatmap, words, ablation, summary], api_name="explain",
                                **endpoint(predictor.can_classify))
                if examples:
                    gr.Examples(examples, [ex_image, ex_text])
            with gr.Tab("Describe", visible=predictor.can_generate):
                room = getattr(predictor.config, "decoder_max_positions", 64) - 2
                with gr.Row():
                    with gr.Column():
                        describe_image = gr.Image(type="filepath", sources=["upload", "webcam", "clipboard"],
                                                  label="Image")
                        question = gr.Textbox(label="Question (leave empty for a caption)", lines=1,
                                              placeholder="what colour is the circle?")
                        new_tokens = gr.Slider(1, room, value=room, step=1, label="At most this many new tokens")
                        describe_button = gr.Button("Describe", variant="primary", elem_id="describe-button")
                    written = gr.Textbox(label="The model writes", lines=3, elem_id="description")
                describe_button.click(describe, [describe_image, question, new_tokens], written, api_name="describe",
                                      **endpoint(predictor.can_generate))
                if examples:
                    gr.Examples([[path, ""] for path, _ in examples], [describe_image, question])
            with gr.Tab("Search", visible=predictor.can_search):
                k = gr.Slider(1, 20, value=6, step=1, label="Results")
                with gr.Row():
                    with gr.Column():
                        query = gr.Textbox(label="Text query -> images")
                        query_button = gr.Button("Search images", variant="primary")
                        gallery = gr.Gallery(label="Images", columns=3)
                        scores = gr.Dataframe(headers=["score", "caption"], label="Scores", interactive=False)
                    with gr.Column():
                        query_image = gr.Image(type="filepath", label="Image query -> texts")
                        image_button = gr.Button("Search texts", variant="primary")
                        texts = gr.Dataframe(headers=["score", "text"], label="Texts", interactive=False)
                query_button.click(search_text, [query, k], [gallery, scores], api_name="search",
                                   **endpoint(predictor.can_search))
                image_button.click(search_image, [query_image, k], texts, api_name="search_image",
                                   **endpoint(predictor.can_search))
    return demo.queue(max_size=MAX_QUEUE, default_concurrency_limit=CONCURRENCY_LIMIT)


def create_demo(model: str | None = None, revision: str | None = None, dataset: str | None = None) -> gr.Blocks:
    """Resolve the model (see the module docstring), load it, index the search data for a retrieval model
    (``dataset``, else ``$MM_HUB_DATASET``, else the built-in shapes data), and build the app.

    Raises:
        ModelLoadError: the model cannot be loaded. InputError: the search dataset cannot be indexed.
    """
    source = resolve_model_source(model, revision, app_dir=APP_DIR)
    predictor = Predictor.from_source(source, demo_model=ensure_demo_model)
    if predictor.can_embed:
        predictor.build_search_index(dataset or os.environ.get("MM_HUB_DATASET") or None)
    return build_demo(predictor, example_pairs())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line flags."""
    parser = argparse.ArgumentParser(description="Serve an mm_hub image+text model in a Gradio app.")
    parser.add_argument(
        "--model",
        help="Hub id (org/name) or local folder; default: $MM_HUB_MODEL, "
        "space_config.json, then the built-in demo model",
    )
    parser.add_argument("--revision", help="branch, tag or commit of a Hub model (default: main)")
    parser.add_argument(
        "--dataset",
        help="retrieval models: dataset to search (Hub id, local folder or saved "
        "index; default: $MM_HUB_DATASET, then the built-in shapes data)",
    )
    parser.add_argument("--host", help="address to listen on (default: 127.0.0.1, or $GRADIO_SERVER_NAME)")
    parser.add_argument("--port", type=int, help="port (default: 7860, or $GRADIO_SERVER_PORT)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Load the model and serve the app until interrupted; a model that cannot be loaded exits with one message."""
    args = parse_args(argv)
    handler = logging.StreamHandler()  # mm_hub's own log lines (one per refused request), not every library's
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logging.getLogger("mm_hub").addHandler(handler)
    logging.getLogger("mm_hub").setLevel(logging.INFO)
    try:
        app = create_demo(args.model, args.revision, args.dataset)
    except (ModelLoadError, InputError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    app.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_UPLOAD)


def __getattr__(name: str) -> Any:
    """``app.demo``: built from the environment / space_config.json / demo model on first access (PEP 562)."""
    if name == "demo":
        globals()["demo"] = create_demo()
        return globals()["demo"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
