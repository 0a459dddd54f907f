"""Test helper: a folder served over HTTP on localhost, for reading collections by URL."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def serve_folder(directory: str | Path) -> Iterator[str]:
    """Serve `directory` from a thread on a free local port; yields its base URL
    (`http://127.0.0.1:<port>`, no trailing slash) and shuts the server down on exit."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None  # no request lines in the test output
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
