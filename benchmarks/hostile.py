"""What an attacker (or a careless client) sends the app, and the raw-HTTP driver that sends it to ``python app.py``.

Shared by the security tests (`tests/test_security.py`) and the memory benchmark (`benchmarks.bench_app_memory`):
hostile files are built in memory (a few hundred bytes to a few MB each, whatever they declare), and `AppProcess`
runs the app in a subprocess whose memory it reads from ``/proc`` (peak and resident; the peak can be reset
between requests so that each request's own peak is measured).
"""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# What one request may add to the app's peak memory (VmHWM), whatever it sends: a 40-megapixel image decodes to
# 160 MB (PIL keeps up to 4 bytes a pixel), is shrunk a band of rows at a time, and everything after that works on
# an image bounded by the processor's size. Before these bounds, one 663-byte PNG cost 6.4 GB.
UPLOAD_BUDGET_MB = 250
# What requests may leave behind (VmRSS after them, against before): the memory a request freed goes back to the
# system, and what stays is caches that stop growing (Gradio's last sessions and events, kernels for new shapes).
# Before, 10 ICNS uploads left 2.96 GB resident.
RETAINED_BUDGET_MB = 200


# ---- hostile files --------------------------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode(image: Image.Image, format: str, **options: Any) -> bytes:  # noqa: A002 - PIL's own name
    """``image`` saved in ``format`` (PNG, JPEG, WEBP, ...) as bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    return encode(image, "PNG")


def webp_bytes(image: Image.Image, **options: Any) -> bytes:
    """A WebP of ``image`` (``lossless=True`` or ``quality=N``), encoded fast."""
    return encode(image, "WEBP", method=0, **options)


def png_with_chunk(kind: bytes, payload: bytes) -> bytes:
    """A valid 8 x 8 PNG with one extra ancillary chunk placed before the pixel data."""
    plain = png_bytes(Image.new("RGB", (8, 8), "red"))
    head = 8 + 25  # signature + IHDR
    return plain[:head] + _chunk(kind, payload) + plain[head:]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (a decompression bomb never needs its pixels to be real)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 16)) + _chunk(b"IEND", b"")


def icns_holding(png: bytes) -> bytes:
    """An ICNS file whose one entry (``ic10``) declares 1024 px at 2x and holds ``png``, whatever its size."""
    entry = b"ic10" + struct.pack(">I", 8 + len(png)) + png
    return b"icns" + struct.pack(">I", 8 + len(entry)) + entry


def ico_holding(png: bytes) -> bytes:
    """An ICO file whose one entry declares 1 x 1 pixels and holds ``png``."""
    return struct.pack("<HHHBBBBHHII", 0, 1, 1, 1, 1, 0, 0, 1, 32, len(png), 22) + png


# Decompress past Pillow's limit on text and colour-profile chunks (a ValueError inside Image.open).
ZTXT_BOMB = png_with_chunk(b"zTXt", b"comment\0\0" + zlib.compress(b"a" * 20_000_000))
ICCP_BOMB = png_with_chunk(b"iCCP", b"profile\0\0" + zlib.compress(b"\0" * 20_000_000))


def hostile_uploads() -> dict[str, tuple[bytes, str]]:
    """Files that cost the most memory the app accepts, or that it must refuse: ``{file name: (bytes, what the app
    answers)}``, the answer being ``"complete"`` or words of the refusal. About 5 s to build."""
    red = "red"
    return {
        "wide.png": (png_bytes(Image.new("RGB", (30_000, 1), red)), "complete"),  # once resized: gigabytes
        "long.png": (png_bytes(Image.new("RGB", (200_000, 1), red)), "too large"),  # 663 bytes
        "tall.png": (png_bytes(Image.new("RGB", (1, 39_999_999), red)), "too large"),  # under 40 MP
        "big.png": (png_bytes(Image.new("RGB", (6324, 6324), red)), "complete"),  # 40 MP, the largest accepted
        "big.jpg": (encode(Image.new("RGB", (6324, 6324), red), "JPEG"), "complete"),
        "big_palette.png": (png_bytes(Image.new("P", (6324, 6324), 3)), "complete"),
        "big_16bit.png": (png_bytes(Image.new("I;16", (6324, 6324), 500)), "complete"),
        "panorama.png": (png_bytes(Image.new("RGBA", (30_000, 1333), red)), "complete"),
        # WebP decodes at four times the memory per pixel: a quarter of the pixels; before, 6,300 px cost +578 MB
        "big.webp": (webp_bytes(Image.new("RGB", (3162, 3162), red), lossless=True), "complete"),
        "lossless.webp": (webp_bytes(Image.new("RGB", (6300, 6300), red), lossless=True), "too large"),
        "strip.webp": (webp_bytes(Image.new("RGB", (16_383, 2400), red), quality=10), "too large"),
        # containers whose header declares one size and which hold a 13,000 px PNG: not an advertised format
        "icon.icns": (icns_holding(png_header_only(13_000, 13_000)), "not a PNG, JPEG, WebP, GIF, BMP or TIFF"),
        "icon.ico": (ico_holding(png_header_only(13_000, 13_000)), "not a PNG, JPEG, WebP, GIF, BMP or TIFF"),
        "ztxt.png": (ZTXT_BOMB, "Decompressed data too large"),
        "bomb.png": (png_header_only(30_000, 30_000), "too large"),
    }


# ---- the app in a subprocess, over raw HTTP ----------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppProcess:
    """``python app.py [--model DIR]`` in a subprocess, driven with plain HTTP requests as any client (or attacker)
    would. Uploads land in ``workdir/gradio``; the log is ``workdir/app.log``.

    Args:
        model: a model folder or Hub id; None serves the demo models (trained on first start, then cached in
            ``$MM_HUB_CACHE``, which is inherited).
        workdir: a folder of its own.
        env: more environment variables for the app.
    """

    def __init__(self, model: str | None, workdir: Path, env: dict[str, str] | None = None, timeout: float = 600):
        self.upload_dir = workdir / "gradio"
        self.log = workdir / "app.log"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        environment = {**os.environ, "GRADIO_TEMP_DIR": str(self.upload_dir), **(env or {})}
        environment.pop("MM_HUB_MODEL", None)
        command = [sys.executable, "app.py", "--port", str(port)] + (["--model", model] if model else [])
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.process.returncode}: {self.log.read_text()[-3000:]}")
            try:
                httpx.get(self.url, timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"app.py did not start within {timeout:.0f} s") from None
                time.sleep(0.3)

    def upload(self, content: bytes, name: str = "image.png") -> dict:
        """Upload a file as the browser does; returns the file payload an honest client then sends."""
        (path,) = httpx.post(f"{self.url}/gradio_api/upload", files=[("files", (name, content))], timeout=60).json()
        return {"path": path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}

    def call(self, endpoint: str, *data: Any) -> tuple[str, Any]:
        """POST /gradio_api/call/<endpoint>, then read its event stream: ``("complete", outputs)`` or
        ``("error", message)``."""
        body = json.dumps({"data": list(data)})  # ASCII JSON: a lone surrogate travels as the escape "\\ud800"
        event_id = httpx.post(f"{self.url}/gradio_api/call/{endpoint}", content=body, timeout=60,
                              headers={"Content-Type": "application/json"}).json()
        stream = httpx.get(f"{self.url}/gradio_api/call/{endpoint}/{event_id['event_id']}", timeout=300).text
        kind = next(line.split(": ", 1)[1] for line in stream.splitlines() if line.startswith("event: "))
        payload = json.loads(next(line[len("data: "):] for line in stream.splitlines() if line.startswith("data: ")))
        return kind, payload["error"] if kind == "error" else payload

    def _status_mb(self, field: str) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith(field))) / 1024

    def peak_rss_mb(self) -> float:
        """The app process's peak resident memory (VmHWM) since it started or since `reset_peak`."""
        return self._status_mb("VmHWM")

    def rss_mb(self) -> float:
        """The app process's resident memory now (VmRSS): what the requests so far left behind."""
        return self._status_mb("VmRSS")

    def reset_peak(self) -> None:
        """Set the peak to the resident memory now (Linux: ``5`` written to ``/proc/PID/clear_refs``)."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
