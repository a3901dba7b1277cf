"""Security and robustness, through the doors an attacker (or a careless user) uses.

- The app: raw HTTP against a running ``python app.py`` (hostile file payloads, memory bombs, inputs outside the
  message contract, the server log).
- Training, push and index: their command lines, on rows and folders built to break them.
- ``pipeline()`` in a fresh interpreter, with mm_hub installed and a repo whose code must not run.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import re
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import datasets
import httpx
import pytest
import torch
from huggingface_hub import HfApi
from PIL import Image
from safetensors.torch import load_file

from mm_hub.inputs import REFUSED_FILE
from mm_hub.search import MultimodalIndex
from tests.conftest import save_tiny_model
from tests.data import catalogue, disk_dataset, tiny_flags
from tests.test_app import _free_port
from training import index as index_cli
from training import push as push_cli
from training.train import main as train

ROOT = Path(__file__).resolve().parents[1]
# What one request may add to the app's peak memory (VmHWM), whatever the upload: a 40-megapixel image decodes to
# 160 MB (PIL keeps up to 4 bytes a pixel), is shrunk a band of rows at a time, and everything after that works on
# an image bounded by the processor's size. Before these bounds, one 663-byte PNG cost 6.4 GB.
UPLOAD_BUDGET_MB = 250


# ---- building hostile files ----------------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_with_chunk(kind: bytes, payload: bytes) -> bytes:
    """A valid 8 x 8 PNG with one extra ancillary chunk placed before the pixel data."""
    plain = png_bytes(Image.new("RGB", (8, 8), "red"))
    head = 8 + 25  # signature + IHDR
    return plain[:head] + _chunk(kind, payload) + plain[head:]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (a decompression bomb never needs its pixels to be real)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 16)) + _chunk(b"IEND", b"")


# Decompress past Pillow's limit on text and colour-profile chunks (a ValueError inside Image.open).
ZTXT_BOMB = png_with_chunk(b"zTXt", b"comment\0\0" + zlib.compress(b"a" * 20_000_000))
ICCP_BOMB = png_with_chunk(b"iCCP", b"profile\0\0" + zlib.compress(b"\0" * 20_000_000))


# ---- the app over raw HTTP -----------------------------------------------------------------------------------------


class RawApp:
    """``python app.py`` in a subprocess, driven with plain HTTP requests as any client (or attacker) would."""

    def __init__(self, model_dir: str, workdir: Path):
        self.upload_dir = workdir / "gradio"  # GRADIO_TEMP_DIR: where uploads land, known to the test
        self.log = workdir / "app.log"
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "GRADIO_TEMP_DIR": str(self.upload_dir), "MM_HUB_CACHE": str(workdir / "cache")}
        env.pop("MM_HUB_MODEL", None)
        self.process = subprocess.Popen(
            [sys.executable, "app.py", "--model", model_dir, "--port", str(port)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"),
        )
        deadline = time.monotonic() + 120
        while True:
            assert self.process.poll() is None, self.log.read_text()
            try:
                httpx.get(self.url, timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "app.py did not start within 120 s"
                time.sleep(0.3)

    def upload(self, content: bytes, name: str = "image.png") -> dict:
        """Upload a file as the browser does; returns the file payload an honest client then sends."""
        (path,) = httpx.post(f"{self.url}/gradio_api/upload", files=[("files", (name, content))], timeout=60).json()
        return {"path": path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}

    def call(self, endpoint: str, *data) -> tuple[str, object]:
        """POST /gradio_api/call/<endpoint>, then read its event stream: ``("complete", outputs)`` or
        ``("error", message)``."""
        body = json.dumps({"data": list(data)})  # ASCII JSON: a lone surrogate travels as the escape "\\ud800"
        event_id = httpx.post(f"{self.url}/gradio_api/call/{endpoint}", content=body, timeout=60,
                              headers={"Content-Type": "application/json"}).json()
        stream = httpx.get(f"{self.url}/gradio_api/call/{endpoint}/{event_id['event_id']}", timeout=300).text
        kind = next(line.split(": ", 1)[1] for line in stream.splitlines() if line.startswith("event: "))
        payload = json.loads(next(line[len("data: "):] for line in stream.splitlines() if line.startswith("data: ")))
        return kind, payload["error"] if kind == "error" else payload

    def peak_rss_mb(self) -> float:
        """The app process's own peak resident memory (VmHWM)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def raw_app(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("raw_app")
    app = RawApp(save_tiny_model(workdir / "model"), workdir)
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


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.slow
def test_one_upload_costs_a_bounded_amount_of_memory(raw_app, scene):
    raw_app.call("explain", raw_app.upload(scene), "a red square")  # warm: every code path has run once
    before = raw_app.peak_rss_mb()
    uploads = {  # name: (file, what the app answers)
        "wide.png": (png_bytes(Image.new("RGB", (30_000, 1), "red")), "complete"),  # once resized: gigabytes
        "long.png": (png_bytes(Image.new("RGB", (200_000, 1), "red")), "too large"),  # 663 bytes
        "tall.png": (png_bytes(Image.new("RGB", (1, 39_999_999), "red")), "too large"),  # under 40 MP
        "big.png": (png_bytes(Image.new("RGB", (6324, 6324), "red")), "complete"),  # 40 MP, the largest accepted
        "big.jpg": (jpeg_bytes(Image.new("RGB", (6324, 6324), "red")), "complete"),
        "big_palette.png": (png_bytes(Image.new("P", (6324, 6324), 3)), "complete"),
        "big_16bit.png": (png_bytes(Image.new("I;16", (6324, 6324), 500)), "complete"),
        "panorama.png": (png_bytes(Image.new("RGBA", (30_000, 1333), "red")), "complete"),
    }
    for name, (content, expected) in uploads.items():
        payload = raw_app.upload(content, name)
        for endpoint in ("classify", "explain"):
            kind, answer = raw_app.call(endpoint, payload, "a red square")
            assert kind == expected if expected == "complete" else expected in answer, (name, answer)
    growth = raw_app.peak_rss_mb() - before
    print(f"peak RSS grew by {growth:.0f} MB over {len(uploads)} hostile uploads")
    assert growth <= UPLOAD_BUDGET_MB


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


def dataset_with(root: Path, images: dict[int, bytes] | None = None, scores: dict[int, float] | None = None) -> Path:
    """`disk_dataset` (16 rows, the first 8 also the validation split) with some rows' image bytes or scores
    replaced."""
    folder = disk_dataset(root / "base")
    data = datasets.load_from_disk(str(folder))

    def change(row, index):
        if index in (images or {}):
            row["image"] = {"bytes": images[index], "path": None}
        if index in (scores or {}):
            row["score"] = scores[index]
        return row

    features = data["train"].features.copy()
    features["image"] = datasets.Image(decode=False)
    changed = datasets.DatasetDict(
        {name: split.cast(features).map(change, with_indices=True, features=features).cast_column("image", datasets.Image())
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


@pytest.mark.slow
def test_push_cli_without_the_hub_is_one_line(tmp_path):
    folder = save_tiny_model(tmp_path / "model")
    command = [sys.executable, "-m", "training.push", "--model-dir", folder, "--repo-id", "someone/model"]
    causes = {  # the cause -> its environment (read when huggingface_hub is imported) and the words of its error
        "unreachable endpoint": ({"HF_ENDPOINT": f"http://127.0.0.1:{_free_port()}"}, "Could not reach the Hub"),
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
