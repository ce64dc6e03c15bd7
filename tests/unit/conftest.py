"""Unit tests run with network sockets off (Unix sockets stay on for asyncio's self-pipe)."""

import pytest
import pytest_socket


@pytest.fixture(autouse=True)
def _no_network():
    pytest_socket.disable_socket(allow_unix_socket=True)
    yield
    pytest_socket.enable_socket()
