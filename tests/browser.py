"""A real headless browser for tests: Debian's Chromium driven over the DevTools protocol
(websocket-client, already in the test environment). Loads one page and reports what a person's
browser did with it: every request it made, and the values of JavaScript expressions."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@dataclass
class Loaded:
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)


def load_page(path: Path, expressions: dict[str, str], timeout: float = 60.0) -> Loaded:
    """Open `path` in headless Chromium, wait for its load event, evaluate `expressions` (name ->
    JavaScript) and return them with every request the page made (and any that failed)."""
    browser = find_browser()
    assert browser is not None, "no Chromium"
    with tempfile.TemporaryDirectory(prefix="selftaught-chromium-") as profile:
        process = subprocess.Popen(
            [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            return _drive(process, path, expressions, timeout)
        finally:
            process.kill()
            process.wait(timeout=30)


def _drive(process: subprocess.Popen, path: Path, expressions: dict[str, str], timeout: float) -> Loaded:
    import websocket

    deadline = time.monotonic() + timeout
    port = None
    while port is None:  # "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/..."
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            raise RuntimeError(f"chromium exited with code {process.returncode}")
        found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
        port = int(found.group(1)) if found else None
        if time.monotonic() > deadline:
            raise TimeoutError("chromium did not open its DevTools port")
    targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
    page = next(t for t in targets if t.get("type") == "page")
    socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True)  # as a DevTools client, not a web page
    loaded, ids = Loaded(), iter(range(1, 1_000_000))

    def call(method: str, **params: Any) -> dict[str, Any]:
        number = next(ids)
        socket.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:
            message = json.loads(socket.recv())
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            _event(message, loaded)

    try:
        call("Network.enable")
        call("Page.enable")
        call("Page.navigate", url=path.resolve().as_uri())
        while True:  # until the load event: every image decoded, every request made
            message = json.loads(socket.recv())
            if message.get("method") == "Page.loadEventFired":
                break
            _event(message, loaded)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} did not finish loading")
        for name, expression in expressions.items():
            result = call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
            loaded.values[name] = result["result"].get("value")
    finally:
        socket.close()
    return loaded


def _event(message: dict[str, Any], loaded: Loaded) -> None:
    method, params = message.get("method"), message.get("params", {})
    if method == "Network.requestWillBeSent":
        loaded.requests.append(params["request"]["url"])
    elif method == "Network.loadingFailed":
        loaded.failed.append(params.get("errorText", "?"))
