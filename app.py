"""mm_hub Gradio app: classify, explain, describe, search and recommend with image+text models from the Hub or folders.

    python app.py                                   # the built-in demo models (trained once, then cached)
    python app.py --model org/name --revision main  # a pushed model (or a local folder)
    python app.py --model org/cls --model org/clip  # several side by side: each tab is served by the first that can
    MM_HUB_MODEL=org/name python app.py             # the same through the environment (as in a Space)
    python app.py --runtime onnx                    # served by ONNX Runtime from each model's export (int8)

The models are chosen by: ``--model`` > ``$MM_HUB_MODEL`` (with ``$MM_HUB_REVISION``) > ``space_config.json`` (the
app manifest) beside this file > the demo models (`mm_hub.loading.resolve_model_sources`). This file only lays out
the UI; the work is done by `mm_hub.predictor.Predictor`. ``demo`` is importable (``import app; app.demo``) and built
from the environment on first access.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from mm_hub.examples import shapes_examples
from mm_hub.cli import run
from mm_hub.inputs import InputError
from mm_hub.limits import MAX_BODY_BYTES, UPLOAD_MARGIN_BYTES, BodySizeLimit, releasing_memory
from mm_hub.loading import resolve_model_sources
from mm_hub.predictor import Predictor
from mm_hub.tasks.classification import ABLATIONS
from mm_hub.tasks.generation import DECODING
from mm_hub.shapes import LABELS
from training.demo_model import demo_models

APP_DIR = Path(__file__).resolve().parent
logger = logging.getLogger("mm_hub.app")
# Model calls run one at a time (the CPU's cores go to torch's own threads); others wait in the queue.
CONCURRENCY_LIMIT = 1
MAX_QUEUE = 64
MAX_UPLOAD = 20_000_000  # bytes of one uploaded file; every other request body: mm_hub.limits.MAX_BODY_BYTES
# Gradio keeps a copy of every component's config per session (about 80 kB here), and each API call without a
# session is a new one: at Gradio's default of 10,000 sessions, requests alone would grow the app by 800 MB. The app
# keeps no per-session state (no gr.State), so the last few sessions are plenty.
SESSION_CAPACITY = 100
RUNTIMES = ("torch", "onnx")  # --runtime: the torch models, or their ONNX exports (mm_hub.onnx_serving)
# Small images (the shapes data is 48 px) are shown enlarged, pixel for pixel; gallery captions wrap, never cut.
APP_CSS = """
.image-frame img { object-fit: contain !important; min-height: 192px; image-rendering: pixelated; }
.thumbnail-item img { image-rendering: pixelated; }
.thumbnail-item { aspect-ratio: auto !important; height: auto !important; display: flex; flex-direction: column; }
.thumbnail-item img { aspect-ratio: 1; }
.caption-label { position: static !important; white-space: normal !important; max-width: 100% !important; }
"""
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
    """A request handler (a function, or a generator that streams) whose `InputError` (bad image or text) becomes a
    `gr.Error` the person sees, logged as one line (Gradio would print two tracebacks per refused request), and
    after which the memory the request freed goes back to the system (`releasing_memory`)."""

    def refuse(error: InputError) -> gr.Error:
        logger.info("/%s refused: %s", fn.__name__, error)
        return gr.Error(str(error), print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)  # keeps the signature, so the API docs name the parameters
        def stream(*args: Any) -> Any:
            try:
                yield from fn(*args)
            except InputError as error:
                raise refuse(error) from None

        return releasing_memory(stream)

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        try:
            return fn(*args)
        except InputError as error:
            raise refuse(error) from None

    return releasing_memory(wrapper)


@dataclass
class TabContext:
    """What a tab builder gets: the model serving the tab (None: the tab is hidden and its endpoints unlisted), the
    examples, and the settings every model call shares."""

    predictor: Predictor | None
    examples: list[list[str]] | None  # [[image_path, text, expected], ...] of this tab
    shared: dict[str, Any]
    demo: gr.Blocks

    def endpoint(self, available: bool | None = None) -> dict[str, Any]:
        """Event settings of an endpoint: listed where a model can serve it (by default, where the tab has a model),
        absent from the API otherwise; one model call at a time."""
        available = self.predictor is not None if available is None else available
        return {**self.shared, "api_visibility": "public" if available else "private"}

    def model(self, what: str) -> Predictor:
        """The tab's model; an `InputError` ("... needs ...") where there is none."""
        if self.predictor is None:
            raise InputError(f"{what}; this app has none loaded.")
        return self.predictor


IMAGE_INPUT = {"type": "filepath", "sources": ["upload", "webcam", "clipboard"]}


def classify_tab(tab: TabContext) -> None:
    """Classify: label probabilities (or values) of an (image, text) pair; ``/classify``."""

    @_user_errors
    def classify(image: Any, text: str) -> dict[str, float] | str:
        """Label scores of one (image, text) pair."""
        model = tab.model("Classification needs a classifier")
        scores = model.classify(image, text)
        _warn_about_text(model, text)
        if model.problem_type == "regression":
            return ", ".join(f"{label} = {value:.4g}" for label, value in scores.items())
        return scores

    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Image", elem_id="classify-image", **IMAGE_INPUT)
            text = gr.Textbox(label="Text", lines=2, placeholder="a red circle on the left", elem_id="classify-text")
            button = gr.Button("Classify", variant="primary", elem_id="classify-button")
        with gr.Column():
            label = gr.Label(num_top_classes=5, label="Prediction", elem_id="prediction")
            expected = gr.Textbox(label="Expected (the example's label in the data)", interactive=False,
                                  visible=bool(tab.examples))
    button.click(classify, [image, text], label, api_name="classify", **tab.endpoint())
    if tab.examples and tab.predictor is not None:
        gr.Examples(tab.examples, [image, text, expected], label="Examples from the shapes data's eval and held-out "
                    "splits, with their expected answer")


def explain_tab(tab: TabContext) -> None:
    """Explain: where the text looked in the image, each word's importance, the modality ablation; ``/explain``."""

    @_user_errors
    def explain(image: Any, text: str) -> tuple[Any, list[tuple[str, float]], list[list[Any]], str]:
        """Heatmap, word importance (with its values), ablation table and a one-line summary for one pair."""
        model = tab.model("Explanations need a classifier")
        result = model.explain(image, text)
        _warn_about_text(model, text)
        table = [[label] + [round(result.ablation[name][label], 4) for name in ABLATIONS] for label in model.labels]
        tops = ", ".join(f"{name}: **{next(iter(result.ablation[name]))}**" for name in ABLATIONS)
        method = "fusion attention" if result.word_method == "attention" else "leave-one-out (score drop per word)"
        heat = "" if result.heatmap is not None else " This fusion has no image attention, so no heatmap."
        summary = f"Prediction **{result.predicted}**. Top label with {tops}. Word importance: {method}.{heat}"
        words = [(f"{word} {score:+.2f}", score) for word, score in result.words]
        return result.heatmap, words, table, summary

    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Image", elem_id="explain-image", **IMAGE_INPUT)
            text = gr.Textbox(label="Text", lines=2, elem_id="explain-text")
            button = gr.Button("Explain", variant="primary", elem_id="explain-button")
        with gr.Column():
            heatmap = gr.Image(label="Where the text looked in the image (colour scale: blue = least, red = most "
                               "attention)", elem_id="heatmap")
            words = gr.HighlightedText(label="Word importance (value per word; red raises the predicted label, blue "
                                       "lowers it)", combine_adjacent=False, color_map=None, show_legend=True,
                                       elem_id="words")
    summary = gr.Markdown(label="Summary", elem_id="summary")
    ablation = gr.Dataframe(headers=["label", *ABLATIONS], label="Modality ablation", interactive=False)
    gr.Markdown(NEUTRAL_INPUTS)
    button.click(explain, [image, text], [heatmap, words, ablation, summary], api_name="explain", **tab.endpoint())
    if tab.examples and tab.predictor is not None:
        gr.Examples([row[:2] for row in tab.examples], [image, text])


def describe_tab(tab: TabContext) -> None:
    """Describe: a caption, or the answer to a question, written token by token, and how sure the model is;
    ``/describe``. Greedy by default; beam search and sampling (`DECODING`) on request."""

    @_user_errors
    def describe(image: Any, question: str, max_new_tokens: float,
                 decoding: str = "greedy") -> Iterator[tuple[str, float | None]]:
        """What the model writes about the image (a caption, or the answer to the question, streamed) and, once
        done, the mean probability of its words (near 1: it read them in the image; low: a guess)."""
        model = tab.model("Describing needs a generation model")
        if isinstance(question, str) and question.strip():
            _warn_about_text(model, question)
        for step in model.describe_stream(image, question, max_new_tokens, decoding):
            if step.done and step.note:
                gr.Warning(step.note)
            yield step.text, None if step.confidence is None else round(step.confidence, 4)

    room = getattr(tab.predictor.config, "decoder_max_positions", 64) - 2 if tab.predictor is not None else 62
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Image", elem_id="describe-image", **IMAGE_INPUT)
            question = gr.Textbox(label="Question (leave empty for a caption)", lines=1,
                                  placeholder="what colour is the circle?", elem_id="describe-question")
            new_tokens = gr.Slider(1, room, value=room, step=1, label="At most this many new tokens (a question takes "
                                   "some: the model writes what room it leaves)")
            decoding = gr.Radio(list(DECODING), value="greedy", label="Decoding")
            button = gr.Button("Describe", variant="primary", elem_id="describe-button")
        with gr.Column():
            written = gr.Textbox(label="The model writes", lines=3, elem_id="description")
            sure = gr.Number(label="How sure: the mean probability of the words it wrote (near 1: read in the image; "
                             "low: a guess)", precision=4, elem_id="describe-confidence")
            expected = gr.Textbox(label="Expected (the example's caption or answer in the data)", interactive=False,
                                  visible=bool(tab.examples))
    button.click(describe, [image, question, new_tokens, decoding], [written, sure], api_name="describe",
                 **tab.endpoint())
    if tab.examples and tab.predictor is not None:
        gr.Examples(tab.examples, [image, question, expected], label="Examples from the shapes data's eval and "
                    "held-out splits: captions (no question) and questions, with what the data says")


def _gallery_and_rows(hits: list[dict[str, Any]]) -> tuple[list[tuple[Any, str]], list[list[Any]]]:
    return [(hit["image"], hit["caption"]) for hit in hits], [[round(hit["score"], 4), hit["caption"]] for hit in hits]


def search_tab(tab: TabContext) -> None:
    """Search: text -> images, image -> texts (``/search``, ``/search_image``, over the indexed dataset) and an image
    labelled by candidate captions (``/zero_shot``, no index needed)."""
    indexed = tab.predictor is not None and tab.predictor.can_search

    def searching() -> Predictor:
        return tab.model("Search needs a retrieval model")

    @_user_errors
    def search_text(query: str, k: float) -> tuple[list[tuple[Any, str]], list[list[Any]]]:
        """Top-k images for a text query: (image, caption) gallery items, and their (score, caption) table rows."""
        return _gallery_and_rows(searching().search_text(query, k))

    @_user_errors
    def search_image(image: Any, k: float) -> list[list[Any]]:
        """Top-k texts for an image query, as (score, text) table rows."""
        return [[round(hit["score"], 4), hit["caption"]] for hit in searching().search_image(image, k)]

    @_user_errors
    def zero_shot(image: Any, candidates: str) -> dict[str, float]:
        """Label an image by candidate captions (one per line): each caption's probability."""
        return tab.model("Labelling by captions needs a retrieval model").zero_shot(image, candidates)

    k = gr.Slider(1, 20, value=6, step=1, label="Results")
    with gr.Row():
        with gr.Column():
            query = gr.Textbox(label="Text query -> images", placeholder="a red circle", elem_id="search-query")
            query_button = gr.Button("Search images", variant="primary", elem_id="search-button")
            gallery = gr.Gallery(label="Images", columns=3, elem_id="search-gallery")
            scores = gr.Dataframe(headers=["score", "caption"], label="Scores", interactive=False, wrap=True,
                                  column_widths=["20%", "80%"])
        with gr.Column():
            query_image = gr.Image(label="Image query -> texts", **IMAGE_INPUT)
            image_button = gr.Button("Search texts", variant="primary", elem_id="search-texts-button")
            texts = gr.Dataframe(headers=["score", "text"], label="Texts", interactive=False, wrap=True,
                                 column_widths=["20%", "80%"])
        with gr.Column():
            zs_image = gr.Image(label="Label an image by candidate captions", elem_id="zero-shot-image", **IMAGE_INPUT)
            candidates = gr.Textbox(label="Candidate captions, one per line", lines=3,
                                    value="a red circle\na blue square\na green triangle")
            zs_button = gr.Button("Label", variant="primary", elem_id="zero-shot-button")
            zs_label = gr.Label(label="Which caption fits", elem_id="zero-shot")
    query_button.click(search_text, [query, k], [gallery, scores], api_name="search", **tab.endpoint(indexed))
    image_button.click(search_image, [query_image, k], texts, api_name="search_image", **tab.endpoint(indexed))
    zs_button.click(zero_shot, [zs_image, candidates], zs_label, api_name="zero_shot", **tab.endpoint())
    if tab.examples and tab.predictor is not None:
        gr.Examples([[row[0]] for row in tab.examples], [query_image], label="Example images")


def recommend_tab(tab: TabContext) -> None:
    """Recommend: the items most like a picked one of the indexed dataset, picture and text together; ``/recommend``."""
    indexed = tab.predictor is not None and tab.predictor.can_search

    def searching() -> Predictor:
        return tab.model("Recommending needs a retrieval model")

    @_user_errors
    def recommend(item: float, mention: str, k: float) -> tuple[list[tuple[Any, str]], list[list[Any]]]:
        """The k items most like item number ``item`` (picture and text together), optionally only those whose
        captions mention ``mention``: (image, caption) gallery items and (score, caption) rows."""
        return _gallery_and_rows(searching().recommend(item, k, mention))

    def show_item(item: Any) -> Any:
        """The picked item's image (UI only)."""
        try:
            return searching().item(item)["image"]
        except InputError:
            return None

    choices = tab.predictor.catalogue() if indexed else []
    with gr.Row():
        with gr.Column():
            item = gr.Dropdown(choices, value=choices[0][1] if choices else None, label="Pick an item",
                               elem_id="recommend-item")
            item_image = gr.Image(label="The item", interactive=False, height=192)
            mention = gr.Textbox(label="Only items whose captions mention (optional)", placeholder="triangle")
            k = gr.Slider(1, 20, value=6, step=1, label="Results")
            button = gr.Button("Recommend", variant="primary", elem_id="recommend-button")
        with gr.Column():
            gallery = gr.Gallery(label="Most similar items (picture and text together)", columns=3,
                                 elem_id="recommend-gallery")
            scores = gr.Dataframe(headers=["score", "caption"], label="Scores", interactive=False, wrap=True,
                                  column_widths=["15%", "85%"])
    item.change(show_item, item, item_image, api_visibility="private", queue=False)
    button.click(recommend, [item, mention, k], [gallery, scores], api_name="recommend", **tab.endpoint(indexed))
    if choices:  # the first item's picture when the page opens
        tab.demo.load(show_item, item, item_image, api_visibility="private", queue=False)


# The app's tabs, in the order shown: name (what `mm_hub.tasks.Task.tabs` lists) -> (title, builder). A task's model
# serves the tabs its task names; a tab no model serves is hidden and its endpoints unlisted.
TABS: dict[str, tuple[str, Callable[[TabContext], None]]] = {
    "classify": ("Classify", classify_tab),
    "explain": ("Explain", explain_tab),
    "describe": ("Describe", describe_tab),
    "search": ("Search", search_tab),
    "recommend": ("Recommend", recommend_tab),
}


def serving(predictors: Sequence[Predictor]) -> dict[str, Predictor | None]:
    """Which model serves each tab of `TABS`: the first whose task lists it (`Predictor.serves`); None where none
    does."""
    return {name: next((predictor for predictor in predictors if predictor.serves(name)), None) for name in TABS}


def build_demo(predictors: Predictor | Sequence[Predictor],
               examples: dict[str, list[list[str]]] | None = None) -> gr.Blocks:
    """Lay out `TABS` around one or several models (`serving` picks the model of each tab; a tab no model can serve
    is hidden and its endpoint unlisted) under a header naming each model; the queue limits concurrent model calls.

    Args:
        predictors: the models, loaded.
        examples: by tab name, ``[[image_path, text, expected], ...]`` rows (`examples_for`), shown under the tabs
            with their expected answer.

    A request can name any path, so each predictor is confined to files in Gradio's upload folder and the examples'
    folders (`Predictor.allowed_dirs`).
    """
    predictors = [predictors] if isinstance(predictors, Predictor) else list(predictors)
    examples = examples or {}
    allowed = [gr.utils.get_upload_folder(), *{str(Path(row[0]).parent) for rows in examples.values() for row in rows}]
    for predictor in predictors:
        predictor.allowed_dirs = allowed
    tabs = serving(predictors)
    shared = {"preprocess": False, "concurrency_id": "model", "concurrency_limit": CONCURRENCY_LIMIT}
    # No usage analytics: the app must start and run on machines without internet access.
    with gr.Blocks(title="mm_hub", analytics_enabled=False) as demo:
        gr.Markdown("# mm_hub · image + text")
        for predictor in dict.fromkeys(p for p in tabs.values() if p is not None):  # each serving model once
            names = [name for name, served_by in tabs.items() if served_by is predictor]
            gr.Markdown(f"**{' · '.join(TABS[name][0] for name in names)}**  \n" + predictor.info_markdown(),
                        elem_id=f"model-info-{names[0]}")
        with gr.Tabs():
            for name, (title, build) in TABS.items():
                with gr.Tab(title, visible=tabs[name] is not None):
                    build(TabContext(tabs[name], examples.get(name), shared, demo))
    return demo.queue(max_size=MAX_QUEUE, default_concurrency_limit=CONCURRENCY_LIMIT)


def _shapes_rows(predictor: Predictor | None, task: str) -> list[list[str]] | None:
    """`shapes_examples` of ``task`` made with the shapes dataset config ``predictor`` was trained on (rows it was
    scored on); None when it was not trained on the shapes data, or its config cannot be rendered."""
    info = predictor.reports.get("training_info.json", {}) if predictor is not None else {}
    if info.get("dataset") != "shapes":
        return None
    config = info.get("dataset_config")
    try:
        return shapes_examples(config if isinstance(config, str) else None, task=task)
    except ValueError as error:  # a config no examples can be made of: the app starts without them
        logger.warning("No examples: the model's shapes dataset_config %r cannot be rendered (%s).", config, error)
        return None


def examples_for(predictors: Sequence[Predictor]) -> dict[str, list[list[str]]]:
    """The app's examples by tab, from the shapes data the models serving the tabs were trained on (made with the
    same dataset config, so they are rows they were scored on): the classifier's captions with their label (Classify,
    Explain, and their images for Search) when its labels are ``mismatch`` / ``match``, and the generator's captions
    and questions with their answer (Describe)."""
    tabs = serving(predictors)
    classifier = tabs["classify"]
    examples = {}
    if classifier is not None and classifier.labels == LABELS:
        rows = _shapes_rows(classifier, "classification")
        examples.update(dict.fromkeys(("classify", "explain", "search"), rows) if rows else {})
    described = _shapes_rows(tabs["describe"], "captioning")
    if described:
        examples["describe"] = described
    return examples


def create_demo(
    model: str | list[str] | None = None, revision: str | None = None, dataset: str | None = None,
    runtime: str = "torch",
) -> gr.Blocks:
    """Resolve the models (see the module docstring), load them, index the search data for the retrieval model
    (``dataset``, else ``$MM_HUB_DATASET``, else the built-in shapes data), and build the app. ``runtime="onnx"``
    serves each model from its ONNX export (`Predictor.use_onnx`: its ``onnx/`` folder, else one made once).

    Raises:
        ModelLoadError: a model cannot be loaded. InputError: the search dataset cannot be indexed.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"The runtime must be one of {list(RUNTIMES)}, got {runtime!r}.")
    sources = resolve_model_sources(model, revision, app_dir=APP_DIR)
    predictors = Predictor.from_sources(sources, demo_models=demo_models)
    for predictor in predictors if runtime == "onnx" else ():
        predictor.use_onnx()
    searcher = serving(predictors)["search"]
    if searcher is not None:
        searcher.build_search_index(dataset or os.environ.get("MM_HUB_DATASET") or None)
    return build_demo(predictors, examples_for(predictors))


def launch(demo: gr.Blocks, **kwargs: Any) -> gr.Blocks:
    """``demo.launch(**kwargs)`` with the app's limits and style: one uploaded file of at most `MAX_UPLOAD` bytes,
    every other request body at most `mm_hub.limits.MAX_BODY_BYTES` (`BodySizeLimit` answers 413 beyond), the state
    of at most `SESSION_CAPACITY` sessions kept, and `APP_CSS`. ``python app.py`` and the tests launch through it."""
    limit = {"max_body_bytes": MAX_BODY_BYTES, "max_upload_bytes": MAX_UPLOAD + UPLOAD_MARGIN_BYTES}
    app_kwargs = {**kwargs.pop("app_kwargs", {}), "middleware": [Middleware(BodySizeLimit, **limit)]}
    demo.launch(max_file_size=MAX_UPLOAD, state_session_capacity=SESSION_CAPACITY, css=APP_CSS, app_kwargs=app_kwargs,
                **kwargs)
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line flags."""
    parser = argparse.ArgumentParser(description="Serve an mm_hub image+text model in a Gradio app.")
    parser.add_argument(
        "--model", action="append",
        help="Hub id (org/name, org/name@revision), local folder, or app manifest (a space_config.json, or a folder "
        "holding one); repeat it to serve several models side by side. Default: $MM_HUB_MODEL, space_config.json "
        "beside app.py, then the built-in demo models",
    )
    parser.add_argument("--revision", help="branch, tag or commit of the Hub model, with one model (default: main)")
    parser.add_argument(
        "--dataset",
        help="dataset the retrieval model searches and recommends from (Hub id, local folder or saved index; "
        "default: $MM_HUB_DATASET, then the built-in shapes data)",
    )
    parser.add_argument("--runtime", default="torch", choices=RUNTIMES,
                        help="torch (default), or onnx: each model's ONNX export with ONNX Runtime (int8 where "
                        "exported so; made once into the cache when the model has no onnx/ folder)")
    parser.add_argument("--host", help="address to listen on (default: 127.0.0.1, or $GRADIO_SERVER_NAME)")
    parser.add_argument("--port", type=int, help="port (default: 7860, or $GRADIO_SERVER_PORT)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Load the models and serve the app until interrupted. Raises `ModelLoadError` for a model that cannot be loaded
    and `InputError` for a dataset that cannot be indexed (``python app.py`` makes either one line: `mm_hub.cli`)."""
    args = parse_args(argv)
    handler = logging.StreamHandler()  # mm_hub's own log lines (one per refused request), not every library's
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logging.getLogger("mm_hub").addHandler(handler)
    logging.getLogger("mm_hub").setLevel(logging.INFO)
    app = create_demo(args.model, args.revision, args.dataset, args.runtime)
    launch(app, server_name=args.host, server_port=args.port, share=args.share)


def __getattr__(name: str) -> Any:
    """``app.demo``: built from the environment / space_config.json / demo models on first access (PEP 562)."""
    if name == "demo":
        globals()["demo"] = create_demo()
        return globals()["demo"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    run(main)  # a model that cannot be loaded, a dataset that cannot be indexed: one line, exit status 2
