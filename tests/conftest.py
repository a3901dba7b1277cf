"""Test session setup: a local Hub-compatible server and private Hugging Face caches for every test.

This runs when pytest imports the conftest, before any test module imports `huggingface_hub` (which reads
`HF_ENDPOINT` at import time). The environment set here is inherited by the subprocesses tests start, so a
`python -c ...` child talks to the same server and uses the same caches.
"""

from __future__ import annotations

import atexit
import itertools
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from tests.hub_server import HubServer

if "huggingface_hub" in sys.modules:  # pragma: no cover - guards against a plugin importing it first
    raise RuntimeError("huggingface_hub was imported before tests/conftest.py could point HF_ENDPOINT at the test Hub")

_ROOT = Path(tempfile.mkdtemp(prefix="mm_hub_tests_"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)

HUB = HubServer(_ROOT / "hub_storage").start()
atexit.register(HUB.stop)

_HF_HOME = _ROOT / "hf_home"
os.environ.update(
    HF_ENDPOINT=HUB.url,
    HF_TOKEN=HUB.token,
    HF_HOME=str(_HF_HOME),
    HF_HUB_CACHE=str(_HF_HOME / "hub"),
    HF_MODULES_CACHE=str(_HF_HOME / "modules"),
    HF_DATASETS_CACHE=str(_HF_HOME / "datasets"),
    HF_XET_CACHE=str(_HF_HOME / "xet"),
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_DISABLE_XET="1",  # the test Hub speaks LFS, not Xet
)
# The suite talks to the local server only; inherited offline switches would make every Hub test meaningless.
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.pop(_name, None)

_COUNTER = itertools.count()


@pytest.fixture(scope="session")
def hub_server() -> HubServer:
    """The running local Hub: `.url`, `.token`, `.user`, and `repos()` / `files()` / `read()` / `commits()` /
    `branches()` to inspect what was pushed."""
    return HUB


@pytest.fixture
def hub_repo_id(request: pytest.FixtureRequest) -> str:
    """A fresh, unused "org/name" repo id for this test (no repo is created)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-.")[:60]
    return f"{HUB.user}/{name}-{next(_COUNTER)}"


def pytest_terminal_summary(terminalreporter) -> None:
    """Name the Hub API calls the local server could not answer (a test failing on one points here)."""
    if HUB.unhandled:
        terminalreporter.write_sep("-", "local Hub: requests with no route (or a server error)")
        for method, path in HUB.unhandled:
            terminalreporter.write_line(f"{method} {path}")
