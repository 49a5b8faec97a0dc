"""Drive headless Chromium over the DevTools protocol on a pipe (``--remote-debugging-pipe``): no driver, no
websocket library, no network. Used by tests/report/test_browser.py, tools/browser/screenshots.py and
tools/browser/scale.py.

    with Chromium() as c:
        c.open("file:///.../index.html")
        c.eval("document.title")
        c.screenshot(Path("shot.png"))
        c.errors  # console errors, uncaught exceptions and failed loads seen so far

Chromium is found as ``$CHROMIUM``, else ``chromium`` / ``chromium-browser`` / ``google-chrome`` on PATH
(Debian: ``apt-get install chromium``); :func:`find` returns None when there is none.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

#: flags that keep a headless Chromium quiet and offline (no background connections, fresh profile)
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--mute-audio", "--hide-scrollbars")


def find() -> str | None:
    env = os.environ.get("CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


class Chromium:
    def __init__(self, width: int = 1280, height: int = 860, timeout: float = 30.0):
        binary = find()
        if binary is None:
            raise FileNotFoundError("no Chromium: install it (Debian: `apt-get install chromium`) or set $CHROMIUM")
        self.timeout, self.errors, self._id, self._buf, self._events = timeout, [], 0, b"", []
        self._profile = tempfile.TemporaryDirectory(prefix="bench-chromium-")
        to_child, self._w = os.pipe()   # we write commands, Chromium reads fd 3
        self._r, from_child = os.pipe()  # Chromium writes fd 4, we read

        def fds():  # in the child: the pipe ends as fds 3 and 4, inheritable (copied above 10 first, so that
            # neither overwrites the other); every other descriptor of ours is close-on-exec (Python's default)
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_child, from_child)]
            for fd, target in zip(high, (3, 4)):
                os.dup2(fd, target)

        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={self._profile.name}",
                                      f"--window-size={width},{height}", "--remote-debugging-pipe", "about:blank"],
                                     close_fds=False, preexec_fn=fds,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        page = next(t for t in self._wait_targets() if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False, session=True)

    # ----------------------------------------------------------------------------------- the protocol
    def _wait_targets(self) -> list[dict]:
        end = time.monotonic() + self.timeout
        while time.monotonic() < end:
            targets = self.call("Target.getTargets")["targetInfos"]
            if any(t["type"] == "page" for t in targets):
                return targets
            time.sleep(0.05)
        raise TimeoutError("Chromium opened no page")

    def _read(self, until: float) -> dict:
        while b"\0" not in self._buf:
            left = until - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise ConnectionError("Chromium closed the pipe")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def _event(self, msg: dict) -> None:
        m, p = msg.get("method"), msg.get("params", {})
        if m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            self.errors.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
        elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
            self.errors.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
        self._events.append(msg)

    def call(self, method: str, session: bool = False, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        until = time.monotonic() + self.timeout
        while True:
            ans = self._read(until)
            if ans.get("id") == self._id:
                if "error" in ans:
                    raise RuntimeError(f"{method}: {ans['error']}")
                return ans.get("result", {})
            self._event(ans)

    def wait_event(self, method: str) -> dict:
        until = time.monotonic() + self.timeout
        for k, msg in enumerate(self._events):
            if msg.get("method") == method:
                return self._events.pop(k)
        while True:
            msg = self._read(until)
            self._event(msg)
            if msg.get("method") == method:
                return self._events.pop()

    # ----------------------------------------------------------------------------------- the page
    def open(self, url: str) -> None:
        """Navigate and wait for the load event (none comes when only the #fragment changes)."""
        self._events.clear()
        if "loaderId" in self.call("Page.navigate", url=url, session=True):
            self.wait_event("Page.loadEventFired")

    def eval(self, expression: str):
        """The value of a JavaScript expression (promises awaited); an exception raises RuntimeError."""
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True, session=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def mouse(self, kind: str, x: float, y: float, **extra) -> None:
        """``Input.dispatchMouseEvent`` (``mouseMoved``, ``mouseWheel`` with deltaY ...) at page pixel (x, y)."""
        self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, session=True, **extra)

    def key(self, key: str) -> None:
        for kind in ("keyDown", "keyUp"):
            self.call("Input.dispatchKeyEvent", type=kind, key=key, code=key, windowsVirtualKeyCode={
                "ArrowRight": 39, "ArrowLeft": 37, "ArrowDown": 40, "ArrowUp": 38}.get(key, 0), session=True)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png", session=True)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (OSError, RuntimeError, TimeoutError, ConnectionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)
        self._profile.cleanup()

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
