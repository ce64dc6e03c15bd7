"""Reliability tests: crash safety, concurrency, hostile input, execution safety, the service.

``_workers.py`` holds the child-process entry points; children are started from a forkserver
that imports it by module name (``reliability._workers``, with ``tests/`` on ``sys.path`` as
pytest's default import mode puts it).
"""

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes seconds (child processes, kill loops); still runs in CI")


@pytest.fixture
def embedder():
    from procmem.embeddings import HashingEmbedder

    return HashingEmbedder(dim=64)
