#!/usr/bin/env python3
"""Makes the console screenshots in docs/ (light and dark, overview and an endpoint page):
serves projects/ with the debug build on a free loopback port, puts some traffic on it, drives
headless Chromium over the DevTools protocol (the test client of the chat page connects and
talks), and saves PNGs. Needs Chromium and Python's websockets (scripts/setup.sh --test).

  python3 docs/screenshots.py [--binary target/debug/switchboard]
"""
import argparse, asyncio, base64, json, os, re, socket, subprocess, tempfile, time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def traffic(base, stop):
    """Chat members and an echo client that keep talking (bounded: they stop with `stop`)."""
    async def member(name, every):
        async with websockets.connect(f"{base}/websockets/v4/service/chat") as ws:
            i = 0
            while not stop.is_set():
                await ws.send(f"{name} says hello {i}")
                i += 1
                await asyncio.sleep(every)
    async def echo():
        async with websockets.connect(f"{base}/websockets/v4/service/echo") as ws:
            while not stop.is_set():
                await ws.send("ping")
                await ws.recv()
                await asyncio.sleep(0.01)
    async def visitor():
        while not stop.is_set():
            async with websockets.connect(f"{base}/websockets/v4/service/my-endpoint") as ws:
                await ws.send("order #17 shipped")
                await asyncio.sleep(2.5)
            await asyncio.sleep(1.5)
    await asyncio.gather(member("ada", 0.7), member("grace", 1.1), echo(), echo(), visitor())


class Page:
    def __init__(self, socket):
        self.socket, self.next = socket, 0

    async def call(self, method, params=None):
        self.next += 1
        await self.socket.send(json.dumps({"id": self.next, "method": method, "params": params or {}}))
        while True:
            reply = json.loads(await self.socket.recv())
            if reply.get("id") == self.next:
                return reply.get("result", {})

    async def eval(self, expression):
        return await self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True})

    async def shot(self, path, width, height, dark):
        await self.call("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        await self.call("Emulation.setEmulatedMedia",
                        {"features": [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]})
        await asyncio.sleep(1.5)
        data = await self.call("Page.captureScreenshot", {"format": "png"})
        path.write_bytes(base64.b64decode(data["data"]))
        print("wrote", path)


async def main(binary):
    port = free_port()
    server = subprocess.Popen([binary, "serve", str(ROOT / "projects"), "--listen", f"127.0.0.1:{port}", "--no-watch"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    profile = tempfile.mkdtemp()
    chromium = subprocess.Popen(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                                 "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
                                stderr=subprocess.PIPE, text=True)
    stop = asyncio.Event()
    try:
        devtools = None
        while devtools is None:
            line = chromium.stderr.readline()
            found = re.search(r"(ws://\S+)", line)
            devtools = found.group(1) if found else None
        time.sleep(1)
        base = f"ws://127.0.0.1:{port}"
        load = asyncio.create_task(traffic(base, stop))
        await asyncio.sleep(20)  # some history for the chart
        async with websockets.connect(devtools, max_size=None) as browser:
            page = Page(browser)
            target = await page.call("Target.createTarget", {"url": "about:blank"})
            session = await page.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
            page.call = lambda method, params=None, sid=session["sessionId"], p=page: raw(p, sid, method, params)
            await page.call("Page.enable")
            for dark in (False, True):
                await page.call("Page.navigate", {"url": f"http://127.0.0.1:{port}/"})
                await page.shot(ROOT / "docs" / f"console-{'dark' if dark else 'light'}.png", 1280, 1020, dark)
            await page.call("Page.navigate", {"url": f"http://127.0.0.1:{port}/console/endpoint/my-endpoint"})
            await asyncio.sleep(1.5)
            await page.eval("""(async () => {
              document.getElementById("tc-connect").click();
              await new Promise((r) => setTimeout(r, 500));
              for (const text of ["hello from the console", "{\\"order\\": 18}"]) {
                document.getElementById("tc-text").value = text;
                document.getElementById("tc-send").click();
                await new Promise((r) => setTimeout(r, 400));
              }
              document.querySelector("#connections tr[data-id]")?.click();
            })()""")
            for dark in (False, True):
                await page.shot(ROOT / "docs" / f"endpoint-{'dark' if dark else 'light'}.png", 1280, 1240, dark)
            await page.shot(ROOT / "docs" / "console-phone.png", 390, 1200, False)
        stop.set()
        await load
    finally:
        stop.set()
        chromium.kill()
        server.kill()


async def raw(page, session, method, params):
    page.next += 1
    await page.socket.send(json.dumps({"id": page.next, "sessionId": session, "method": method, "params": params or {}}))
    while True:
        reply = json.loads(await page.socket.recv())
        if reply.get("id") == page.next:
            return reply.get("result", {})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=str(ROOT / "target" / "debug" / "switchboard"))
    asyncio.run(main(parser.parse_args().binary))
