"""Security and robustness, through the doors an attacker (or a careless user) uses.

- The app: raw HTTP against a running ``python app.py`` (hostile file payloads, memory bombs, inputs outside the
  message contract, the server log).
- Training, push and index: their command lines, on rows and folders built to break them.
- ``pipeline()`` in a fresh interpreter, with mm_hub installed and a repo whose code must not run.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import datasets
import httpx
import pytest
import torch
from huggingface_hub import HfApi
from PIL import Image
from safetensors.torch import load_file

from mm_hub.cli import run
from mm_hub.inputs import REFUSED_FILE
from mm_hub.loading import ModelLoadError, load_model
from mm_hub.search import MultimodalIndex
from tests.conftest import save_tiny_model, tiny_model
from tests.data import catalogue, disk_dataset, tiny_flags
from benchmarks.bench_app_memory import NORMAL, Requests, mixed, one_at_a_time
from benchmarks.hostile import (
    ICCP_BOMB,
    RETAINED_BUDGET_MB,
    UPLOAD_BUDGET_MB,
    ZTXT_BOMB,
    AppProcess,
    free_port,
    png_bytes,
    png_header_only,
)
from training import index as index_cli
from training import push as push_cli
from training.train import TrainingDivergedError, check_finite_weights
from training.train import main as train

ROOT = Path(__file__).resolve().parents[1]


# ---- the app over raw HTTP -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw_app(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("raw_app")
    app = AppProcess(save_tiny_model(workdir / "model"), workdir, {"MM_HUB_CACHE": str(workdir / "cache")}, timeout=120)
    yield app
    app.stop()


@pytest.fixture(scope="module")
def scene() -> bytes:
    return png_bytes(Image.new("RGB", (48, 40), (200, 30, 30)))


@pytest.mark.slow
def test_the_app_opens_only_files_uploaded_to_it(raw_app, scene, tmp_path):
    secret = tmp_path / "server" / "scene.png"  # a real image on the server, never uploaded
    secret.parent.mkdir()
    secret.write_bytes(scene)
    planted = raw_app.upload_dir / "planted.png"  # a link inside the upload folder leads outside it
    planted.symlink_to(secret)
    hostile = [
        str(secret), "/etc/hostname", "/no/such/file.png", "/etc", f"{raw_app.upload_dir}/../server/scene.png",
        "/tmp/" + "x" * 300 + ".png", str(planted), "/tmp/nul\x00byte.png", "http://127.0.0.1:9/x.png",
    ]
    for endpoint in ("classify", "explain"):
        for path in hostile:
            kind, message = raw_app.call(endpoint, {"path": path}, "a red square")
            assert (kind, message) == ("error", REFUSED_FILE), path  # one answer: no oracle for server paths
        kind, outputs = raw_app.call(endpoint, raw_app.upload(scene), "a red square")
        assert kind == "complete", outputs


@pytest.mark.slow
def test_hostile_and_normal_requests_cost_a_bounded_amount_of_memory_and_leave_none(raw_app):
    requests = Requests(raw_app)  # what benchmarks.bench_app_memory sends, with a shorter mixed load
    requests.send(NORMAL, "explain")  # warm: every code path has run once
    resident = raw_app.rss_mb()
    alone = one_at_a_time(requests)
    assert [row["problem"] for row in alone.values() if row["problem"]] == []
    worst = max(alone, key=lambda name: alone[name]["peak_mb"])
    mix = mixed(requests, clients=4, seconds=8)
    kept = raw_app.rss_mb() - resident
    print(f"\nlargest request peak {alone[worst]['peak_mb']:.0f} MB ({worst}); {mix['requests']} mixed requests; "
          f"{kept:.0f} MB stayed")
    assert alone[worst]["peak_mb"] <= UPLOAD_BUDGET_MB and kept <= RETAINED_BUDGET_MB
    assert mix["problems"] == 0 and mix["requests"] >= 8, mix["problem_examples"]


@pytest.mark.slow
def test_request_bodies_are_bounded(raw_app, scene):
    resident = raw_app.rss_mb()
    text = "x" * 100_000_000  # a 100 MB caption: before, parsed and kept (+191 MB)

    def chunks():  # no Content-Length: counted as it arrives
        for start in range(0, 5_000_000, 100_000):
            yield text[start:start + 100_000].encode()

    for body in (json.dumps({"data": [None, text]}), chunks()):
        answer = httpx.post(f"{raw_app.url}/gradio_api/call/classify", content=body, timeout=60,
                            headers={"Content-Type": "application/json"})
        assert answer.status_code == 413 and "limit of this route" in answer.json()["detail"]
    upload = httpx.post(f"{raw_app.url}/gradio_api/upload", files=[("files", ("big.png", b"\0" * 22_000_000))],
                        timeout=60)
    assert upload.status_code == 413
    assert raw_app.call("classify", raw_app.upload(scene), "a red square")[0] == "complete"  # still serving
    assert raw_app.rss_mb() - resident <= RETAINED_BUDGET_MB


@pytest.mark.slow
def test_inputs_outside_the_contract_get_a_message(raw_app, scene):
    image = raw_app.upload(scene)
    cases = [
        (raw_app.upload(ZTXT_BOMB), "a red square", "could not be read as an image .*Decompressed data too large"),
        (raw_app.upload(ICCP_BOMB), "a red square", "could not be read as an image .*Decompressed data too large"),
        (raw_app.upload(png_header_only(30_000, 30_000)), "a red square", "too large"),
        (image, "a \ud800 red square", "not valid Unicode: character 3 is an unpaired surrogate"),
        (image, "\x00\x01\x7f", "The text is empty"),
        (image, ["a list"], "must be a string"),
    ]
    for endpoint in ("classify", "explain"):
        for payload, text, message in cases:
            kind, answer = raw_app.call(endpoint, payload, text)
            assert kind == "error" and answer is not None, (text, answer)
            assert re.search(message, answer), (message, answer)


@pytest.mark.slow
def test_refused_requests_log_one_line_each(raw_app, scene):
    start = raw_app.log.stat().st_size
    for text in ("", "x" * 2000, "\x00"):
        assert raw_app.call("classify", raw_app.upload(scene), text)[0] == "error"
    assert raw_app.call("explain", {"path": "/etc/hostname"}, "a cat")[0] == "error"
    time.sleep(0.5)
    with open(raw_app.log) as handle:
        handle.seek(start)
        lines = handle.read().splitlines()
    assert "Traceback" not in "\n".join(lines)
    assert len([line for line in lines if "refused" in line]) == 4


def test_python_app_py_answers_a_gradio_client(raw_app, scene, tmp_path):
    # The same `python app.py --model DIR` process, called as the README's API section does.
    from gradio_client import Client, handle_file

    image = tmp_path / "scene.png"
    image.write_bytes(scene)
    result = Client(raw_app.url + "/", verbose=False).predict(handle_file(str(image)), "a red square",
                                                               api_name="/classify")
    assert result["label"] in {entry["label"] for entry in result["confidences"]}


# ---- training ------------------------------------------------------------------------------------------------------


def dataset_with(root: Path, images: dict[int, bytes] | None = None, scores: dict[int, float] | None = None,
                 labels: dict[int, str | None] | None = None) -> Path:
    """`disk_dataset` (16 rows, the first 8 also the validation split) with some rows' image bytes or scores
    replaced; the scores are float64 (1e308 stays itself); with ``labels``, a string column ``kind`` holding
    ``labels[row]`` or "round" / "angular" by row."""
    folder = disk_dataset(root / "base")
    data = datasets.load_from_disk(str(folder))

    def change(row, index):
        if index in (images or {}):
            row["image"] = {"bytes": images[index], "path": None}
        if index in (scores or {}):
            row["score"] = scores[index]
        if labels is not None:
            row["kind"] = labels.get(index, ("round", "angular")[index % 2])
        return row

    features = data["train"].features.copy()
    features["image"] = datasets.Image(decode=False)
    features["score"] = datasets.Value("float64")
    mapped = features.copy()
    if labels is not None:
        mapped["kind"] = datasets.Value("string")
    changed = datasets.DatasetDict(
        {name: split.cast(features).map(change, with_indices=True, features=mapped).cast_column("image", datasets.Image())
         for name, split in data.items()}
    )
    changed.save_to_disk(str(root / "data"))
    return root / "data"


def test_a_decompression_bomb_row_is_skipped_and_counted(tmp_path):
    data = dataset_with(tmp_path, images={3: png_header_only(30_000, 30_000)})
    out = tmp_path / "out"
    train(["--dataset", str(data), "--label-column", "score", *tiny_flags(out), "--max-steps", "4"])
    skipped = json.loads((out / "training_info.json").read_text())["skipped_rows"]
    assert skipped == {"train": {"unreadable image": 1}, "eval": {"unreadable image": 1}}
    with pytest.raises(ValueError, match="Row 3 of the (train|eval) split: unreadable image .*too large"):
        train(["--dataset", str(data), "--label-column", "score", *tiny_flags(tmp_path / "strict"), "--strict"])


def _strict_json(path: Path) -> dict:
    def refuse(constant):
        raise ValueError(f"{path.name} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_nan_and_infinite_labels_are_skipped_and_every_report_is_standard_json(tmp_path):
    data = dataset_with(tmp_path, scores={2: math.nan, 5: math.inf, 11: -math.inf})
    out = tmp_path / "out"
    metrics = train(["--dataset", str(data), "--label-column", "score", *tiny_flags(out), "--max-steps", "4"])
    assert all(math.isfinite(value) for value in metrics.values())
    info = _strict_json(out / "training_info.json")
    assert info["skipped_rows"] == {"train": {"invalid label": 3}, "eval": {"invalid label": 2}}
    assert _strict_json(out / "eval_results.json") == metrics
    assert all(torch.isfinite(tensor).all() for tensor in load_file(str(out / "model.safetensors")).values())
    with pytest.raises(ValueError, match="Row (2|5|11) of the (train|eval) split: invalid label"):
        train(["--dataset", str(data), "--label-column", "score", *tiny_flags(tmp_path / "strict"), "--strict"])


def test_a_label_too_large_to_train_on_is_skipped_and_none_is_never_a_class(tmp_path):
    data = dataset_with(tmp_path, scores={4: 1e308, 9: -1e300}, labels={6: None, 12: None})
    out = tmp_path / "regression"  # 1e308 is finite, but its squared error is not: it once made every weight NaN
    train(["--dataset", str(data), "--label-column", "score", *tiny_flags(out), "--max-steps", "4"])
    skipped = {"train": {"invalid label": 2}, "eval": {"invalid label": 1}}  # rows 0-7 are the eval split too
    assert _strict_json(out / "training_info.json")["skipped_rows"] == skipped
    assert all(torch.isfinite(tensor).all() for tensor in load_file(str(out / "model.safetensors")).values())
    out = tmp_path / "classes"  # a missing label is a row to skip, not a class "None" that never trains
    train(["--dataset", str(data), "--label-column", "kind", *tiny_flags(out), "--max-steps", "4"])
    config = json.loads((out / "config.json").read_text())
    assert sorted(config["id2label"].values()) == ["angular", "round"]
    assert _strict_json(out / "training_info.json")["skipped_rows"] == skipped


def test_a_run_that_diverges_stops_with_an_error_and_saves_no_model(tmp_path):
    data = disk_dataset(tmp_path / "data")
    out = tmp_path / "out"
    with pytest.raises(TrainingDivergedError, match="Training diverged at step [0-9]+: the gradients' norm is nan"):
        train(["--dataset", str(data), "--label-column", "score", *tiny_flags(out), "--max-steps", "6",
               "--learning-rate", "1e30"])
    assert not {"model.safetensors", "eval_results.json", "training_info.json"} & {p.name for p in out.iterdir()}
    model = tiny_model()
    with torch.no_grad():  # a NaN that no gradient shows: BatchNorm statistics updated by a NaN batch
        next(buffer for name, buffer in model.named_buffers() if "running_mean" in name)[0] = math.nan
    with pytest.raises(TrainingDivergedError, match="1 of [0-9]+ weight tensors hold NaN .*running_mean"):
        check_finite_weights(model)


def test_skipped_rows_are_kept_with_the_checkpoint(tmp_path):
    data = disk_dataset(tmp_path / "data", corrupt=(3, 6), empty_text=(9,))
    common = ["--dataset", str(data), "--label-column", "score", "--max-steps", "4", "--eval-strategy", "steps",
              "--eval-steps", "2", "--save-total-limit", "3"]
    straight = tmp_path / "straight"
    train([*tiny_flags(straight), *common])
    resumed = tmp_path / "resumed"  # a run killed after its step-2 checkpoint, then resumed
    resumed.mkdir()
    (resumed / "checkpoint-2").symlink_to(straight / "checkpoint-2", target_is_directory=True)
    train([*tiny_flags(resumed), *common, "--resume-from-checkpoint"])
    report = [json.loads((folder / "training_info.json").read_text())["skipped_rows"] for folder in (straight, resumed)]
    assert report[0] == report[1] == {"train": {"unreadable image": 2, "empty text": 1},
                                      "eval": {"unreadable image": 2}}


# ---- loading -------------------------------------------------------------------------------------------------------


def test_loading_refuses_a_config_that_asks_for_too_much_before_allocating_it(tmp_path):
    folder = Path(save_tiny_model(tmp_path / "model"))
    config = json.loads((folder / "config.json").read_text())
    cases = {  # each field within its bound but the product far beyond: the parameter count catches it
        "labels": ({"num_labels": 1_000_000_000, "id2label": None, "label2id": None}, "num_labels = 1,000,000,000"),
        "width": ({"text_config": {**config["text_config"], "hidden_size": 10**7}}, "text_config.hidden_size"),
        "product": ({"id2label": {str(i): str(i) for i in range(100_000)}, "fusion_hidden_size": 65_536,
                     "fusion_num_heads": 2}, "a model of [0-9,]+ parameters; mm_hub loads at most"),
    }
    for name, (change, message) in cases.items():
        (folder / "config.json").write_text(json.dumps({**config, **change}))
        started = time.monotonic()
        with pytest.raises(ModelLoadError, match=message):
            load_model(folder)
        assert time.monotonic() - started < 10, name  # refused, not allocated until it failed (25-40 s before)


def test_loading_refuses_a_tokenizer_it_cannot_read(tmp_path):
    folder = Path(save_tiny_model(tmp_path / "model"))
    original = (folder / "tokenizer.json").read_bytes()
    (folder / "tokenizer.json").write_text('{"version": "1.0", "truncation"')
    with pytest.raises(ModelLoadError, match="tokenizer.json of .* cannot be read"):
        load_model(folder)
    (folder / "tokenizer.json").unlink()  # before: a vocabulary of 5, every word [UNK], no warning
    with pytest.raises(ModelLoadError, match="has no vocabulary, only its 5 special tokens"):
        load_model(folder)
    (folder / "tokenizer.json").write_bytes(original)
    assert load_model(folder)[1].tokenizer.tokenize("a red circle") == ["a", "red", "circle"]


# ---- push ----------------------------------------------------------------------------------------------------------


def test_push_uploads_only_regular_files_inside_the_folder_and_no_pickles(tmp_path, hub_server, hub_repo_id):
    folder = Path(save_tiny_model(tmp_path / "model"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("a file outside the model folder")
    (folder / "secret.txt").symlink_to(outside / "secret.txt")
    (folder / "linked").symlink_to(outside, target_is_directory=True)
    (folder / "training_args.bin").write_bytes(pickle.dumps({"output_dir": str(tmp_path)}))
    (folder / "notes.dat").write_bytes(pickle.dumps("a pickle under another name"))
    torch.save({"weights": torch.zeros(2)}, folder / "extra.safetensors.bak")  # torch.save: a zip of pickles
    push_cli.main(["--model-dir", str(folder), "--repo-id", hub_repo_id])
    uploaded = set(hub_server.files(hub_repo_id))
    assert {"config.json", "model.safetensors", "processor_config.json", "README.md"} <= uploaded
    assert not uploaded & {"secret.txt", "linked/secret.txt", "training_args.bin", "notes.dat", "extra.safetensors.bak"}
    assert (folder / "training_args.bin").exists()  # the local folder is left as it was


def test_push_reads_nothing_through_a_link_and_refuses_a_folder_it_would_leave_incomplete(tmp_path, hub_server,
                                                                                        hub_repo_id, capsys):
    folder = Path(save_tiny_model(tmp_path / "model"))
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = {"task": "image-text-classification", "dataset": "SECRET-DATASET-NAME", "metrics": {"eval_accuracy": 0.5}}
    (outside / "training_info.json").write_text(json.dumps(secret))
    (folder / "training_info.json").symlink_to(outside / "training_info.json")
    push_cli.main(["--model-dir", str(folder), "--repo-id", hub_repo_id])  # the link is neither uploaded nor read
    card = hub_server.read(hub_repo_id, "README.md").decode()
    assert "SECRET-DATASET-NAME" not in card and "training_info.json" not in hub_server.files(hub_repo_id)

    commits = len(hub_server.commits(hub_repo_id))

    def refused(message: str) -> None:
        capsys.readouterr()  # what earlier steps printed
        with pytest.raises(SystemExit) as exit_info:
            run(push_cli.main, ["--model-dir", str(folder), "--repo-id", hub_repo_id])
        line = capsys.readouterr().err
        assert exit_info.value.code == 2 and re.search(f"^error: .*{message}", line) and line.count("\n") == 1

    config = (folder / "config.json").read_bytes()
    (outside / "config.json").write_bytes(config)
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to(outside / "config.json")  # before: read for validation, then left out
    refused("holds no config.json \\(config.json \\(a link or special file\\): never uploaded\\)")
    (folder / "config.json").unlink()
    (folder / "config.json").write_bytes(config)
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(b"")  # before: a traceback
    refused("model.safetensors is not a readable safetensors file \\(0 bytes")
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "tokenizer.json").unlink()
    refused("holds no tokenizer vocabulary")
    assert len(hub_server.commits(hub_repo_id)) == commits  # refused before any request


@pytest.mark.slow
def test_push_cli_without_the_hub_is_one_line(tmp_path):
    folder = save_tiny_model(tmp_path / "model")
    command = [sys.executable, "-m", "training.push", "--model-dir", folder, "--repo-id", "someone/model"]
    causes = {  # the cause -> its environment (read when huggingface_hub is imported) and the words of its error
        "unreachable endpoint": ({"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}, "Could not reach the Hub"),
        "offline mode": ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE"),
    }
    running = {cause: subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(ROOT), **env}, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for cause, (env, _) in causes.items()}  # both at once: each is mostly its interpreter's start-up
    for cause, process in running.items():
        _, stderr = process.communicate(timeout=120)
        assert process.returncode != 0 and "Traceback" not in stderr, (cause, stderr[-3000:])
        (line,) = [line for line in stderr.splitlines() if line.startswith("error:")]
        assert causes[cause][1] in line, (cause, line)


# ---- pipeline() with mm_hub installed --------------------------------------------------------------------------------


PIPELINE_CALLS = {  # head: (the pipeline, where its model must come from, a call)
    "classification": ("image-text-classification", "mm_hub.model.modeling_mm_hub",
                       "pipe({'image': Image.new('RGB', (32, 32), 'red'), 'text': 'a red square'}, top_k=1)"),
    "generation": ("image-text-to-text", "mm_hub.model.generation_mm_hub",
                   "pipe(images=Image.new('RGB', (32, 32), 'red'), text='what colour?', max_new_tokens=3)"),
}


@pytest.mark.slow
def test_pipeline_with_mm_hub_installed_runs_no_code_from_the_repo(tmp_path, hub_server, hub_repo_id):
    script = "import mm_hub\nfrom transformers import pipeline\nfrom PIL import Image\n"
    for head, (task, _, call) in PIPELINE_CALLS.items():  # one process loads every head: one start-up
        folder = Path(save_tiny_model(tmp_path / head, head))
        for name in sorted(path.name for path in folder.glob("*.py")):
            with open(folder / name, "a") as handle:  # a hostile repo: its code would announce itself, then fail
                handle.write(f"\nprint('REPO CODE RAN: {name}')\nraise SystemExit(3)\n")
        repo = f"{hub_repo_id}-{head}"
        HfApi().create_repo(repo)
        HfApi().upload_folder(repo_id=repo, folder_path=str(folder))
        script += f"pipe = pipeline({task!r}, model={repo!r})\nprint(type(pipe.model).__module__)\nprint({call})\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "REPO CODE RAN" not in result.stdout + result.stderr
    modules = [line for line in result.stdout.splitlines() if line.startswith("mm_hub.")]
    assert modules == [module for _, module, _ in PIPELINE_CALLS.values()]


# ---- index ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def index_model(tmp_path_factory) -> Path:
    return Path(save_tiny_model(tmp_path_factory.mktemp("index_model") / "model", "retrieval"))


def catalogue_folder(root: Path, bad: dict[int, bytes]) -> Path:
    """The index tests' catalogue saved to disk, with some rows' images replaced by ``bad`` bytes."""
    rows = catalogue().cast_column("image", datasets.Image(decode=False))
    rows = rows.map(lambda row, i: {"image": {"bytes": bad.get(i, row["image"]["bytes"]), "path": None}},
                    with_indices=True, features=rows.features)
    rows.cast_column("image", datasets.Image()).save_to_disk(str(root))
    return root


def test_index_cli_leaves_out_unreadable_images_and_strict_names_them(index_model, tmp_path, capsys):
    data = catalogue_folder(tmp_path / "data", {2: b"not an image", 7: png_header_only(30_000, 30_000)})
    flags = ["--model", str(index_model), "--dataset", str(data), "--no-progress"]
    index = index_cli.main([*flags, "--out", str(tmp_path / "index")])
    assert len(index) == 10 and index.metadata["skipped_rows"] == {"unreadable image": [2, 7]}
    assert "Left out 2 rows (unreadable image): 2, 7" in capsys.readouterr().out
    assert len(MultimodalIndex.load(tmp_path / "index").search_text("a red item", k=20)) == 10
    with pytest.raises(ValueError, match="Row 2: unreadable image"):
        index_cli.main([*flags, "--out", str(tmp_path / "strict"), "--strict"])


def test_a_text_only_index_decodes_no_image(index_model, tmp_path):
    data = catalogue_folder(tmp_path / "data", {i: b"not an image" for i in range(12)})
    index = index_cli.main(["--model", str(index_model), "--dataset", str(data), "--image-column", "none",
                            "--out", str(tmp_path / "index"), "--no-progress"])
    assert len(index) == 12 and index.metadata["embedding_columns"] == ["text_embeds"]


def test_index_folders_cannot_name_paths_and_damage_is_detected(index_model, tmp_path):
    data = catalogue_folder(tmp_path / "data", {})
    folder = tmp_path / "index"
    index_cli.main(["--model", str(index_model), "--dataset", str(data), "--out", str(folder), "--no-progress"])
    metadata_file = folder / "mm_hub_index.json"
    original = metadata_file.read_text()
    hostile = json.loads(original)
    hostile["embedding_columns"] = ["../../../../etc/passwd"]
    metadata_file.write_text(json.dumps(hostile))
    with pytest.raises(ValueError, match="not a valid mm_hub index: its embedding columns"):
        MultimodalIndex.load(folder)
    metadata_file.write_text(original)
    faiss_file = folder / "faiss" / "image_embeds.faiss"
    content = bytearray(faiss_file.read_bytes())
    content[-5] ^= 0x01  # one flipped bit in a stored vector
    faiss_file.write_bytes(bytes(content))
    with pytest.raises(ValueError, match="damaged: faiss/image_embeds.faiss does not have the checksum"):
        MultimodalIndex.load(folder)
