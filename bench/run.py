#!/usr/bin/env python3
"""Runs Switchboard's benchmark suite side by side with the runtimes users would pick instead.

Each server is pinned to core 0 (taskset) and the load generator to core 1; every server gets the
same warm-up. Results go to bench/results/: RESULTS.md (a table with each figure and each peer's
ratio to Switchboard), one PNG chart per scenario, and results.json. Called by bench/run.sh, which
builds the binaries and installs the peers first.

  bench/run.py [--smoke] [--only NAME,...] [--baseline PATH] [--typescript]

--baseline PATH adds "baseline": another switchboard binary (an earlier build), measured with the
same workspace and options in every round, interleaved with the others: a before/after comparison.

--stomp measures two handlers (an echo, and one that builds a new string) over raw WebSocket and
over STOMP (Dirigible's /ws/stomp/{endpoint} with its reply envelope), 100 connections, in
interleaved rounds, with the load generator's CPU time.

--cluster measures a broadcast to 1,000 connections spread over two nodes joined by Redis (a
redis-server on a free loopback port, persistence off): Switchboard (`serve --broker`) against
Socket.IO 4 with @socket.io/redis-adapter on the same Redis, and each on one node, in interleaved
rounds, with one load generator (Socket.IO spoken by it too). Every server and Redis on core 0.

--console measures what an open console page costs: the echo scenario (100 connections, 32 B)
with the endpoint page's live feed (/console/feed?endpoint=echo) being read, against none, in
interleaved rounds.

--compression measures permessage-deflate: an echo of 1 KiB JSON messages on 100 connections, a
broadcast of a 4 KiB JSON message to 1,000 connections, and the memory of 10,000 idle connections,
every one with the extension negotiated: Switchboard (`--compression shared`, and `dedicated`)
against Bun (`perMessageDeflate: true`, every send compressed) and Node's ws (`perMessageDeflate:
true`), and Switchboard without compression for reference; msg/s, bytes on the wire per message
each way, server and client CPU. Rounds interleaved, the median round.

--handlers N measures a workspace of N projects (default 1,000), each one endpoint with a two-line
handler: with `serve --load eager`, `--load lazy` and `--load lazy --unload-idle 1`, the seconds
until the server announces itself and until every endpoint has answered one message (50
connections at a time), the resident memory and threads at both points and the most memory held
while they answer, and the CPU the idle server uses over 5 s after that. Server on core 0.

--scale measures connections at scale, every server in turn: 5,000 connections each echoing
continuously (one message in flight each, 32 B, the lean generator): how many upgrades completed,
msg/s, the worst round trip and the fewest echoes any connection got (a server that starves
sockets shows it); and many idle connections (50,000, or as many as the per-process file limit
allows, over two loopback source addresses): how many opened, how long opening them took, memory
per connection.

--instances measures more than one core for one endpoint: a handler that works for each message
(bench/workspace/bench/work.js: hashing, then the message back), the lowercase handler (64 B text)
and the binary echo (20 B), 100 connections, one message in flight each, the lean generator after a checked
pass: Switchboard with the endpoint's `"instances": 2` against one instance, and Bun as two
processes sharing the port (`reusePort`) against one. Nothing is pinned (the servers may use both
cores, and the generator shares them); rounds interleaved, the median round; server CPU is the sum
of its processes.

--only switchboard,switchboard-ts measures the TypeScript echo handler (bench/echo-ts.ts, an ES
module with types) beside the JavaScript one. --typescript measures instead how long a reload of a
1,000-line TypeScript handler takes, transpiled afresh and from the cache, beside the same handler
in JavaScript.
"""
import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
PEERS = BENCH / ".peers" / "node_modules"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, process, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


class Servers:
    """How to start each server: (command for echo, command for broadcast, URL path)."""

    def __init__(self, profile, baseline=None):
        target = ROOT / "target" / profile
        self.switchboard = target / "switchboard"
        self.baseline = Path(baseline) if baseline else None
        self.rust_echo = target / "switchboard-rust-echo"
        self.node = shutil.which("node")
        self.deno = PEERS / "@deno" / "linux-x64-glibc" / "deno"
        self.bun = PEERS / "bun" / "bin" / "bun.exe"

    def available(self):
        """name -> None if runnable, else why not."""
        why = {}
        why["switchboard"] = None if self.switchboard.exists() else f"{self.switchboard} not built"
        why["switchboard-ts"] = why["switchboard"]
        if self.baseline is not None:
            why["baseline"] = None if self.baseline.exists() else f"{self.baseline} does not exist"
        why["rust-echo"] = None if self.rust_echo.exists() else f"{self.rust_echo} not built"
        if not self.node:
            why["node-ws"] = "node is not installed"
        elif not (PEERS / "ws").exists():
            why["node-ws"] = "the ws package is not installed (npm install ws@8 in bench/.peers)"
        else:
            why["node-ws"] = None
        why["deno"] = None if self.deno.exists() else "the deno npm package (its linux-x64 binary) is not installed"
        why["bun"] = None if self.bun.exists() else "the bun npm package (its linux-x64 binary) is not installed"
        return why

    def command(self, name, port, broadcast, handler="echo"):
        # "-deflate" asks a peer for permessage-deflate; Switchboard's compression modes are
        # "switchboard-shared" and "switchboard-dedicated".
        deflate = name.endswith("-deflate")
        name = name.removesuffix("-deflate")
        mode = (["broadcast"] if broadcast else []) + (["deflate"] if deflate else []) + (["lower"] if handler == "lower" else [])
        compression = {"switchboard-shared": "shared", "switchboard-dedicated": "dedicated"}.get(name)
        if compression:
            name = "switchboard"
        if name in ("switchboard", "baseline", "switchboard-ts"):
            binary = self.baseline if name == "baseline" else self.switchboard
            echo = "echo-ts" if name == "switchboard-ts" else handler
            extra = ["--compression", compression] if compression else []
            return [str(binary), "serve", str(BENCH / "workspace"), "--listen", f"127.0.0.1:{port}",
                    "--no-watch", "--max-connections", "20000"] + extra, "/websockets/v4/service/" + ("broadcast" if broadcast else echo)
        if name == "rust-echo":
            if handler != "echo":
                raise ValueError("rust-echo only echoes")
            return [str(self.rust_echo), f"127.0.0.1:{port}"] + (["--broadcast"] if broadcast else []), "/"
        if name == "node-ws":
            return [self.node, str(BENCH / "peers" / "node-server.cjs"), str(port)] + mode, "/"
        if name == "deno":
            return [str(self.deno), "run", "-A", str(BENCH / "peers" / "deno-server.ts"), str(port)] + mode, "/"
        if name == "bun":
            return [str(self.bun), str(BENCH / "peers" / "bun-server.ts"), str(port)] + mode, "/"
        raise ValueError(name)


def start(servers, name, broadcast=False, handler="echo"):
    port = free_port()
    command, path = servers.command(name, port, broadcast, handler)
    env = dict(os.environ, NODE_PATH=str(PEERS), RUST_LOG="warn", DENO_NO_UPDATE_CHECK="1")
    process = subprocess.Popen(["taskset", "-c", "0"] + command, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, env=env, cwd=str(BENCH / ".peers") if (BENCH / ".peers").exists() else None)
    wait_port(port, process)
    return process, f"ws://127.0.0.1:{port}{path}"


def stop(process):
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def loadgen(binary, args, timeout, pin=True):
    pinned = ["taskset", "-c", "1"] if pin else []
    result = subprocess.run(pinned + [str(binary)] + args, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit {result.returncode}")
    return json.loads(result.stdout)


def cold_start(servers, timeout=30):
    """Milliseconds from a project dropped into a watched workspace to its first reply."""
    workspace = Path(tempfile.mkdtemp(prefix="sb-cold-"))
    port = free_port()
    process = subprocess.Popen(["taskset", "-c", "0", str(servers.switchboard), "serve", str(workspace),
                                "--listen", f"127.0.0.1:{port}", "--watch-debounce-ms", "50"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG="warn"))
    try:
        wait_port(port, process)
        import base64
        key = base64.b64encode(os.urandom(16)).decode()
        started = time.perf_counter()
        project = workspace / "cold"
        project.mkdir()
        (project / "h.js").write_text("exports.onMessage = (m) => `cold ${m}`;")
        (project / "e.websocket").write_text('{"handler": "cold/h", "endpoint": "cold"}')
        deadline = time.time() + timeout
        while time.time() < deadline:
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall((f"GET /websockets/v4/service/cold HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
                head = s.recv(4096)
                if head.startswith(b"HTTP/1.1 101"):
                    s.sendall(bytes([0x81, 0x82, 1, 2, 3, 4]) + bytes(b ^ k for b, k in zip(b"hi", [1, 2])))
                    reply = s.recv(64)
                    if b"cold hi" in reply:
                        return (time.perf_counter() - started) * 1000
            time.sleep(0.002)
        raise RuntimeError("no reply from the new endpoint")
    finally:
        stop(process)
        shutil.rmtree(workspace, ignore_errors=True)


def proc_status(pid):
    """(resident MiB, threads) of a process, from /proc."""
    fields = dict(line.split(":\t", 1) for line in open(f"/proc/{pid}/status") if ":\t" in line)
    return round(int(fields["VmRSS"].split()[0]) / 1024, 1), int(fields["Threads"])


async def answer_once(port, endpoint, timeout):
    """Opens a WebSocket to `endpoint`, sends one message and returns the reply's text."""
    import asyncio, base64
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /websockets/v4/service/{endpoint} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"{endpoint}: {head.splitlines()[0].decode()}")
        mask = os.urandom(4)
        writer.write(bytes([0x81, 0x82]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(b"hi")))
        first = await asyncio.wait_for(reader.readexactly(2), timeout)
        return (await reader.readexactly(first[1] & 0x7F)).decode()
    finally:
        writer.close()


def many_handlers(servers, count, timeout=300):
    """A workspace of `count` one-endpoint projects, served with each --load mode."""
    import asyncio
    workspace = Path(tempfile.mkdtemp(prefix="sb-handlers-"))
    for i in range(count):
        project = workspace / f"p{i}"
        project.mkdir()
        (project / "h.js").write_text(f"// handler {i}\nexports.onMessage = (m) => `{i} ${{m}}`;\n")
        (project / "e.websocket").write_text(f'{{"handler": "p{i}/h", "endpoint": "e{i}"}}')
    results = {}
    try:
        for mode in ("eager", "lazy", "lazy-unload"):
            port = free_port()
            started = time.perf_counter()
            load = ["--load", "lazy", "--unload-idle", "1"] if mode == "lazy-unload" else ["--load", mode]
            process = subprocess.Popen(["taskset", "-c", "0", str(servers.switchboard), "serve", str(workspace),
                                        "--listen", f"127.0.0.1:{port}", "--no-watch"] + load,
                                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                       env=dict(os.environ, RUST_LOG="warn"))
            try:
                for line in process.stdout:
                    if "Switchboard is listening" in line:
                        break
                else:
                    raise RuntimeError("the server ended before listening")
                announced = time.perf_counter() - started
                at_start = proc_status(process.pid)

                async def all_answer():
                    gate = asyncio.Semaphore(50)

                    async def one(i):
                        async with gate:
                            reply = await answer_once(port, f"e{i}", timeout)
                            if reply != f"{i} hi":
                                raise RuntimeError(f"e{i} answered {reply!r}")
                    await asyncio.gather(*(one(i) for i in range(count)))
                # The most memory held while they answer, sampled every 20 ms.
                peak = [at_start[0]]
                answering = threading.Event()

                def sample():
                    while not answering.wait(0.02):
                        peak[0] = max(peak[0], proc_status(process.pid)[0])
                sampler = threading.Thread(target=sample)
                sampler.start()
                try:
                    asyncio.run(all_answer())
                finally:
                    answering.set()
                    sampler.join()
                answered = time.perf_counter() - started
                after = proc_status(process.pid)
                peak[0] = max(peak[0], after[0])
                cpu_before = cpu_seconds(process.pid)
                time.sleep(5)
                idle_cpu = cpu_seconds(process.pid) - cpu_before
                after_idle = proc_status(process.pid)
                results[mode] = {
                    "mode": "handlers", "handlers": count,
                    "announced_seconds": round(announced, 2), "all_answered_seconds": round(answered, 2),
                    "rss_mib_at_start": at_start[0], "threads_at_start": at_start[1],
                    "rss_mib_all_used": after[0], "threads_all_used": after[1],
                    "rss_mib_peak_while_answering": peak[0],
                    "mib_per_used_handler": round((after[0] - at_start[0]) / count, 2) if mode == "lazy" else round(after[0] / count, 2) if mode == "eager" else None,
                    "idle_cpu_seconds_in_5s": round(idle_cpu, 3),
                    "rss_mib_after_5s_idle": after_idle[0], "threads_after_5s_idle": after_idle[1],
                }
            except Exception as error:
                results[mode] = {"error": str(error)}
            finally:
                process.stdout.close()
                stop(process)
            print(f"{count:,} handlers, --load {mode}: {json.dumps(results[mode])}", file=sys.stderr)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    return results


def scale(servers, names, loadgen_binary, options):
    """5,000 busy connections and many idle ones, per server (see --scale)."""
    busy = 200 if options.smoke else 5000
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    # The server and the generator each hold one descriptor per connection, plus their own.
    idle = min(200 if options.smoke else 50000, soft - 1000)
    results = {"busy": {}, "idle": {}, "idle_target": 50000, "idle_measured": idle,
               "file_limit_per_process": soft}
    for name in names:
        if name == "rust-echo" and not options.smoke:
            continue
        for kind, arguments in (
            ("busy", lambda url, _: ["--url", url, "--mode", "echo", "--connections", str(busy), "--size", "32",
                                     "--window", "1", "--duration", str(options.duration), "--warmup", "3",
                                     "--lean", "--partial"]),
            ("idle", lambda url, process: ["--url", url, "--mode", "idle", "--connections", str(idle),
                                           "--sources", "2", "--partial", "--server-pid", str(server_pid(process))]),
        ):
            try:
                process, url = start(servers, name)
            except Exception as error:
                results[kind][name] = {"error": f"server did not start: {error}"}
                continue
            try:
                results[kind][name] = loadgen(loadgen_binary, arguments(url, process) + ["--label", name], 600)
            except Exception as error:
                results[kind][name] = {"error": str(error)}
            finally:
                stop(process)
            r = results[kind][name]
            if "error" in r:
                shown = "FAILED: " + r["error"]
            elif kind == "busy":
                shown = (f"{r['opened']:,} of {busy:,} opened, {r['messages_per_second']:,.0f} msg/s, worst round trip "
                         f"{r['latency_ms']['max']:.1f} ms (p99.9 {r['latency_ms']['p999']:.1f}), echoes per connection "
                         f"min {r['echoes_per_connection']['min']} median {r['echoes_per_connection']['median']}, "
                         f"generator core {r['generator_core_busy'] * 100:.0f}% busy")
            else:
                shown = (f"{r['opened']:,} of {idle:,} opened in {r['open_seconds']:.1f} s, "
                         f"{r['bytes_per_connection'] / 1024:.1f} KiB/conn")
            print(f"{kind:<5} {name:<12} {shown}", file=sys.stderr)
    return results


def typescript_source(version, typed, blocks=125):
    """A 1,000-line handler (8 lines a block): interfaces, enums, generic classes and functions,
    with its types (`typed`) or without them (the same program in JavaScript). `version` goes into
    the reply, so that each edit is a new text."""
    lines = []
    for i in range(blocks):
        if typed:
            lines += [f"interface Row{i} {{ id: number; name: string; tags: string[] }}",
                      f"enum Kind{i} {{ A = {i}, B, C }}",
                      f"export class Store{i}<T extends Row{i}> {{",
                      "  private items: T[] = [];",
                      f"  add(item: T): number {{ this.items.push(item); return this.items.length + Kind{i}.B; }}",
                      "}",
                      f"export function handle{i}(value: string): string {{ return `${{value}}:{i}`; }}",
                      ""]
        else:
            lines += [f"// Row{i}: id, name, tags",
                      f"const Kind{i} = Object.freeze({{ A: {i}, B: {i + 1}, C: {i + 2} }});",
                      f"export class Store{i} {{",
                      "  items = [];",
                      f"  add(item) {{ this.items.push(item); return this.items.length + Kind{i}.B; }}",
                      "}",
                      f"export function handle{i}(value) {{ return `${{value}}:{i}`; }}",
                      ""]
    signature = "(message: string): string" if typed else "(message)"
    lines[-1] = f"export function onMessage{signature} {{ return `{version} ${{handle0(message)}}`; }}"
    return "\n".join(lines) + "\n"


def typescript_load(servers, rounds=7, timeout=30):
    """Milliseconds a reload of a 1,000-line handler takes (the server's own "reload in" figure):
    TypeScript transpiled afresh (new text), TypeScript from the transpile cache (a text seen
    before), and the same program in JavaScript."""
    import re
    workspace = Path(tempfile.mkdtemp(prefix="sb-tsload-"))
    project = workspace / "load"
    project.mkdir()
    for name, typed in (("big-ts.ts", True), ("big-js.mjs", False)):
        (project / name).write_text(typescript_source("v0", typed))
        endpoint = name.split(".")[0]
        (project / f"{endpoint}.websocket").write_text(f'{{"handler": "load/{name}", "endpoint": "{endpoint}"}}')
    port = free_port()
    log_path = Path(tempfile.mkdtemp(prefix="sb-tsload-log-")) / "server.log"
    log = open(log_path, "w")
    process = subprocess.Popen(["taskset", "-c", "0", str(servers.switchboard), "serve", str(workspace),
                                "--listen", f"127.0.0.1:{port}", "--watch-debounce-ms", "20"],
                               stdout=subprocess.PIPE, stderr=log, env=dict(os.environ, RUST_LOG="info"), text=True)
    pattern = re.compile(r"reload in (\d+(?:\.\d+)?) ms: handler load/(\S+) reloaded")
    seen = [0]

    def reload(name, text):
        (project / name).write_text(text)
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = pattern.findall(log_path.read_text())
            if len(found) > seen[0]:
                seen[0] = len(found)
                milliseconds, handler = found[-1]
                if handler != name:
                    raise RuntimeError(f"reloaded {handler}, expected {name}")
                return float(milliseconds)
            time.sleep(0.005)
        raise RuntimeError(f"no reload of {name} within {timeout} s; the log:\n{log_path.read_text()}")

    try:
        # The port listens before the handlers have loaded; an edit before then is not a reload.
        for line in process.stdout:
            if "Switchboard is listening" in line:
                break
        fresh, cached, javascript = [], [], []
        for n in range(1, rounds + 1):
            fresh.append(reload("big-ts.ts", typescript_source(f"v{n}", True)))
            cached.append(reload("big-ts.ts", typescript_source(f"v{n - 1}", True)))
            javascript.append(reload("big-js.mjs", typescript_source(f"v{n}", False)))
        median = lambda values: sorted(values)[len(values) // 2]
        return {"mode": "tsload", "lines": typescript_source("v0", True).count("\n"),
                "fresh_ms": median(fresh), "cached_ms": median(cached), "javascript_ms": median(javascript),
                "runs": {"fresh": fresh, "cached": cached, "javascript": javascript}}
    finally:
        stop(process)
        log.close()
        shutil.rmtree(workspace, ignore_errors=True)
        shutil.rmtree(log_path.parent, ignore_errors=True)


def stomp_echo(servers, loadgen_binary, options):
    """Two handlers (bench/echo.js returns its input; bench/lower.js builds a new string) over raw
    WebSocket and over STOMP, on one server, rounds interleaved; the median round of each. The
    load generator's CPU time is reported beside each figure."""
    duration, warmup, rounds = (1.0, 0.3, 1) if options.smoke else (options.duration, options.warmup, options.repeat)
    runs = {}
    for _ in range(rounds):
        for handler in ("echo", "lower"):
            for size in (32, 16384):
                for transport in ("raw", "stomp"):
                    process, url = start(servers, "switchboard")
                    base = url.split("/websockets/")[0]
                    try:
                        arguments = ["--mode", "echo", "--connections", "100", "--size", str(size), "--window", "1",
                                     "--duration", str(duration), "--warmup", str(warmup), "--label", transport]
                        if transport == "stomp":
                            arguments += ["--url", f"{base}/stomp", "--stomp", handler]
                        else:
                            arguments += ["--url", f"{base}/websockets/v4/service/{handler}"]
                        before = resource.getrusage(resource.RUSAGE_CHILDREN)
                        result = loadgen(loadgen_binary, arguments, 120)
                        after = resource.getrusage(resource.RUSAGE_CHILDREN)
                        result["client_cpu_seconds"] = round(
                            (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 2)
                    except Exception as error:
                        result = {"error": str(error)}
                    finally:
                        stop(process)
                    key = f"{handler} {size} B x 100 conns, {transport}"
                    runs.setdefault(key, []).append(result)
                    cpu = result.get("client_cpu_seconds")
                    print(f"{key:<38} {summary(result)}, client CPU {cpu} s", file=sys.stderr)
    return {key: median_round(results) for key, results in runs.items()}


def redis_server():
    """A redis-server on a free loopback port, persistence off, pinned to the servers' core."""
    port = free_port()
    process = subprocess.Popen(["taskset", "-c", "0", "redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--protected-mode", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, process)
    return process, port


def redis_cli(port, *command):
    return subprocess.run(["redis-cli", "-p", str(port)] + list(command), capture_output=True, text=True,
                          timeout=10).stdout.split()


def until(what, predicate, timeout=15):
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise RuntimeError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def switchboard_nodes(servers, redis_port, count):
    """`count` Switchboard nodes of one application (with a broker when more than one)."""
    nodes = []
    for index in range(count):
        port = free_port()
        command = [str(servers.switchboard), "serve", str(BENCH / "workspace"), "--listen", f"127.0.0.1:{port}",
                   "--no-watch", "--max-connections", "20000", "--node-name", f"bench-{index}"]
        if count > 1:
            command += ["--broker", f"redis://127.0.0.1:{redis_port}", "--broker-prefix", "bench"]
        process = subprocess.Popen(["taskset", "-c", "0"] + command, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, env=dict(os.environ, RUST_LOG="warn"))
        wait_port(port, process)
        nodes.append((process, port))
    if count > 1:
        def knows_all(port):
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            return any(line == f"switchboard_broker_nodes {count}" for line in body.splitlines())
        for _, port in nodes:
            until("the nodes to know each other", lambda: knows_all(port))
    return [p for p, _ in nodes], [f"ws://127.0.0.1:{port}/websockets/v4/service/broadcast" for _, port in nodes]


def socketio_nodes(servers, redis_port, count):
    """`count` Socket.IO servers (with the Redis adapter when more than one)."""
    nodes = []
    for _ in range(count):
        port = free_port()
        command = [servers.node, str(BENCH / "peers" / "socketio-server.cjs"), str(port)]
        if count > 1:
            command.append(f"redis://127.0.0.1:{redis_port}")
        process = subprocess.Popen(["taskset", "-c", "0"] + command, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, env=dict(os.environ, NODE_PATH=str(PEERS)))
        wait_port(port, process)
        nodes.append((process, port))
    if count > 1:
        # Every node's adapter subscribes to the namespace's request channel (and pattern-subscribes
        # to its broadcast channels) once connected.
        until("the Socket.IO nodes to subscribe",
              lambda: int(redis_cli(redis_port, "PUBSUB", "NUMSUB", "socket.io-request#/#")[1]) >= count)
    return [p for p, _ in nodes], [f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket" for _, port in nodes]


def console_cost(servers, loadgen_binary, options):
    """Echo with and without a console page's feed open on the endpoint; the median round of each."""
    import threading
    duration, warmup, rounds = (1.0, 0.3, 1) if options.smoke else (options.duration, options.warmup, options.repeat)
    runs = {}
    for _ in range(rounds):
        for mode in ("no console", "console page open"):
            process, url = start(servers, "switchboard")
            base = url.split("/websockets/")[0].replace("ws://", "http://")
            reader = None
            events = [0]
            try:
                if mode != "no console":
                    feed = urllib.request.urlopen(f"{base}/console/feed?endpoint=echo", timeout=30)

                    def read():
                        try:
                            for line in feed:
                                if line.startswith(b"event: "):
                                    events[0] += 1
                        except Exception:
                            pass
                    reader = threading.Thread(target=read, daemon=True)
                    reader.start()
                cpu_before = cpu_seconds(process.pid)
                result = loadgen(loadgen_binary, ["--url", url, "--mode", "echo", "--connections", "100", "--size", "32",
                                                  "--window", "1", "--duration", str(duration), "--warmup", str(warmup),
                                                  "--label", mode], 120)
                result["server_cpu_seconds"] = round(cpu_seconds(process.pid) - cpu_before, 3)
                if reader is not None:
                    result["feed_events"] = events[0]
                    if events[0] == 0:
                        result = {"error": "the console feed sent nothing"}
            except Exception as error:
                result = {"error": str(error)}
            finally:
                stop(process)
            runs.setdefault(mode, []).append(result)
            extra = f", feed events read {result['feed_events']}" if "feed_events" in result else ""
            print(f"{mode:<20} {summary(result)}{extra}", file=sys.stderr)
    return {mode: median_round(results) for mode, results in runs.items()}


def cluster_broadcast(servers, loadgen_binary, options):
    """Broadcast to 1,000 connections over two nodes through Redis: Switchboard against Socket.IO
    with its Redis adapter, and each on one node; rounds interleaved, the median round of each."""
    receivers, broadcast_rounds, rounds = (50, 20, 1) if options.smoke else (1000, 1000, options.repeat)
    systems = [("switchboard, 1 node", switchboard_nodes, 1), ("switchboard, 2 nodes + Redis", switchboard_nodes, 2)]
    if servers.node and (PEERS / "@socket.io" / "redis-adapter").exists():
        systems += [("socket.io, 1 node", socketio_nodes, 1), ("socket.io, 2 nodes + Redis adapter", socketio_nodes, 2)]
    else:
        print("skipping socket.io: node or bench/.peers' socket.io packages missing (bench/run.sh installs them)",
              file=sys.stderr)
    redis, redis_port = redis_server()
    runs = {}
    try:
        for _ in range(rounds):
            for name, start_nodes, count in systems:
                processes = []
                try:
                    processes, urls = start_nodes(servers, redis_port, count)
                    pids = [p.pid for p in processes] + [redis.pid]
                    cpu_before = sum(cpu_seconds(pid) for pid in pids)
                    arguments = ["--mode", "broadcast", "--connections", str(receivers), "--rounds", str(broadcast_rounds),
                                 "--size", "32", "--label", name]
                    for url in urls:
                        arguments += ["--url", url]
                    if name.startswith("socket.io"):
                        arguments.append("--socketio")
                    client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
                    result = loadgen(loadgen_binary, arguments, 300)
                    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    result["server_cpu_seconds"] = round(sum(cpu_seconds(pid) for pid in pids) - cpu_before, 3)
                    result["client_cpu_seconds"] = round((client_after.ru_utime + client_after.ru_stime)
                                                         - (client_before.ru_utime + client_before.ru_stime), 2)
                except Exception as error:
                    result = {"error": str(error)}
                finally:
                    for process in processes:
                        stop(process)
                runs.setdefault(name, []).append(result)
                client = f", client CPU {result['client_cpu_seconds']} s in {result['seconds']:.1f} s" if "seconds" in result else ""
                print(f"{name:<36} {summary(result)}{client}", file=sys.stderr)
    finally:
        stop(redis)
    return {name: median_round(results) for name, results in runs.items()}


def compression(servers, loadgen_binary, options):
    """permessage-deflate: echo of 1 KiB JSON x 100 connections, broadcast of 4 KiB JSON to 1,000
    connections, 10,000 idle connections; every server with the extension negotiated (and
    Switchboard without it for reference). Rounds interleaved; the median round of each."""
    duration, warmup, rounds = (1.0, 0.3, 1) if options.smoke else (options.duration, options.warmup, options.repeat)
    receivers, broadcast_rounds, idle = (50, 20, 200) if options.smoke else (1000, 500, options.idle)
    available = servers.available()
    systems = [("switchboard, no compression", "switchboard", False),
               ("switchboard, shared", "switchboard-shared", True),
               ("switchboard, dedicated", "switchboard-dedicated", True)]
    for label, name in (("bun, perMessageDeflate", "bun"), ("node ws, perMessageDeflate", "node-ws")):
        if available.get(name):
            print(f"skipping {name}: {available[name]}", file=sys.stderr)
        elif not options.smoke:
            systems.append((label, f"{name}-deflate", True))

    def run(label, name, deflate, broadcast, arguments, timeout=300):
        try:
            process, url = start(servers, name, broadcast)
        except Exception as error:
            return {"error": f"server did not start: {error}"}
        try:
            cpu_before = cpu_seconds(process.pid)
            client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            result = loadgen(loadgen_binary, ["--url", url, "--label", label] + (["--deflate"] if deflate else [])
                             + arguments(process), timeout)
            client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            result["server_cpu_seconds"] = round(cpu_seconds(process.pid) - cpu_before, 3)
            result["client_cpu_seconds"] = round((client_after.ru_utime + client_after.ru_stime)
                                                 - (client_before.ru_utime + client_before.ru_stime), 2)
            return result
        except Exception as error:
            return {"error": str(error)}
        finally:
            stop(process)

    runs = {}

    def record(scenario, label, result):
        runs.setdefault(scenario, {}).setdefault(label, []).append(result)
        wire = result.get("wire", {})
        extra = ""
        if wire:
            extra = (f", wire {wire['client_to_server_bytes_per_message']:.0f} B up / "
                     f"{wire['server_to_client_bytes_per_message']:.0f} B down per message "
                     f"(ratio {wire['server_ratio']:.2f})")
        if "client_cpu_seconds" in result:
            extra += f", server CPU {result['server_cpu_seconds']} s, client CPU {result['client_cpu_seconds']} s"
        print(f"{scenario:<34} {label:<28} {summary(result)}{extra}", file=sys.stderr)

    echo = "echo 1 KiB JSON x 100 conns"
    fanout = "broadcast 4 KiB JSON to 1,000 conns"
    for _ in range(rounds):
        for label, name, deflate in systems:
            record(echo, label, run(label, name, deflate, False, lambda _: [
                "--mode", "echo", "--json", "--connections", "100", "--size", "1024", "--window", "1",
                "--duration", str(duration), "--warmup", str(warmup)], 120))
        for label, name, deflate in systems:
            record(fanout, label, run(label, name, deflate, True, lambda _: [
                "--mode", "broadcast", "--json", "--connections", str(receivers), "--rounds", str(broadcast_rounds),
                "--size", "4096"]))
    idle_scenario = f"{idle:,} idle conns"
    for label, name, deflate in systems:
        record(idle_scenario, label, run(label, name, deflate, False, lambda process: [
            "--mode", "idle", "--connections", str(idle), "--server-pid", str(server_pid(process))]))
    return {scenario: {label: median_round(results) for label, results in by.items()} for scenario, by in runs.items()}


# The identity echo (which a fast path may recognise) is kept, but beside binary frames and a
# handler that builds a new string (`m.toLowerCase()` in every runtime; the generator sends upper
# case and checks the lower case that comes back).
def instance_workspace():
    """A copy of the bench workspace whose echo and lowercase endpoints run two instances."""
    root = Path(tempfile.mkdtemp(prefix="sb-instances-"))
    shutil.copytree(BENCH / "workspace", root / "workspace")
    project = root / "workspace" / "bench"
    for name in ("echo", "lower"):
        descriptor = json.loads((project / f"{name}.websocket").read_text())
        descriptor["instances"] = 2
        (project / f"{name}.websocket").write_text(json.dumps(descriptor))
    (project / "work.websocket").write_text(json.dumps({"handler": "bench/work", "endpoint": "work", "instances": 2}))
    return root


def start_unpinned(commands, port):
    """Starts every command (processes of one server) without pinning; waits until each says it
    listens (Bun) or the port answers (Switchboard)."""
    env = dict(os.environ, NODE_PATH=str(PEERS), RUST_LOG="warn")
    processes = []
    for command in commands:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                   cwd=str(BENCH / ".peers") if (BENCH / ".peers").exists() else None)
        processes.append(process)
        if len(commands) > 1:
            # Each process of a reusePort pair says when it listens: the port answering tells
            # only that one of them does.
            line = process.stdout.readline()
            if "listening" not in line:
                raise RuntimeError(f"{command[0]} did not start: {line or process.stderr.read()[-500:]}")
    wait_port(port, processes[0])
    return processes


def instances(servers, loadgen_binary, options):
    """One endpoint on more than one core (see --instances)."""
    workspace = instance_workspace()
    single = Path(tempfile.mkdtemp(prefix="sb-instance-"))
    shutil.copytree(BENCH / "workspace", single / "workspace")
    (single / "workspace" / "bench" / "work.websocket").write_text(json.dumps({"handler": "bench/work", "endpoint": "work"}))
    configurations = {
        "switchboard x1": lambda port: [[str(servers.switchboard), "serve", str(single / "workspace"), "--listen",
                                         f"127.0.0.1:{port}", "--no-watch"]],
        "switchboard x2": lambda port: [[str(servers.switchboard), "serve", str(workspace / "workspace"), "--listen",
                                         f"127.0.0.1:{port}", "--no-watch"]],
    }
    if servers.bun.exists() and not options.smoke:
        bun = lambda port: [str(servers.bun), str(BENCH / "peers" / "bun-server.ts"), str(port), "reuse"]
        configurations["bun x1"] = lambda port: [bun(port)]
        configurations["bun x2"] = lambda port: [bun(port), bun(port)]
    scenarios = [("hashing 64 B x 100 conns", "work", ["--size", "64"]),
                 ("lowercase 64 B x 100 conns", "lower", ["--size", "64", "--upper"]),
                 ("echo 20 B binary x 100 conns", "echo", ["--size", "20", "--binary"])]
    rounds = {}
    try:
        for _ in range(1 if options.smoke else options.repeat):
            for scenario, handler, shape in scenarios:
                for name, commands in configurations.items():
                    port = free_port()
                    extra = [handler] if handler != "echo" and name.startswith("bun") else []
                    path = "/" if name.startswith("bun") else f"/websockets/v4/service/{handler}"
                    url = f"ws://127.0.0.1:{port}{path}"
                    arguments = ["--url", url, "--mode", "echo", "--connections", "100", "--window", "1",
                                 "--duration", str(options.duration), "--warmup", str(options.warmup)] + shape
                    try:
                        processes = start_unpinned([c + extra for c in commands(port)], port)
                    except Exception as error:
                        result = {"error": f"server did not start: {error}"}
                    else:
                        try:
                            checked = list(arguments)
                            checked[checked.index("--duration") + 1] = "0.5"
                            checked[checked.index("--warmup") + 1] = "0.2"
                            loadgen(loadgen_binary, checked + ["--label", name], 120, pin=False)
                            before = sum(cpu_seconds(p.pid) for p in processes)
                            result = loadgen(loadgen_binary, arguments + ["--lean", "--label", name], 120, pin=False)
                            result["server_cpu_seconds"] = round(sum(cpu_seconds(p.pid) for p in processes) - before, 3)
                            # Measured over the warm-up and the measurement alike.
                            result["server_cores_busy"] = round(
                                result["server_cpu_seconds"] / (options.duration + options.warmup), 2)
                        except Exception as error:
                            result = {"error": str(error)}
                        finally:
                            for process in processes:
                                stop(process)
                    rounds.setdefault(scenario, {}).setdefault(name, []).append(result)
                    cores = f", server {result['server_cores_busy']} cores busy" if result.get("server_cores_busy") else ""
                    print(f"{scenario:<30} {name:<15} {summary(result)}{cores}", file=sys.stderr)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
        shutil.rmtree(single, ignore_errors=True)
    return {scenario: {name: median_round(runs) for name, runs in by_server.items()}
            for scenario, by_server in rounds.items()}


ECHO_SCENARIOS = [
    ("echo 32 B x 1 conn", dict(connections=1, size=32)),
    ("echo 32 B x 100 conns", dict(connections=100, size=32)),
    ("echo 20 B binary x 100 conns", dict(connections=100, size=20, binary=True)),
    ("lowercase 64 B x 100 conns", dict(connections=100, size=64, handler="lower")),
    ("echo 16 KiB x 1 conn", dict(connections=1, size=16384)),
    ("echo 16 KiB x 100 conns", dict(connections=100, size=16384)),
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="seconds, Switchboard and rust-echo only, dev build, no charts")
    parser.add_argument("--only", help="comma-separated servers")
    parser.add_argument("--baseline", help="another switchboard binary, measured as 'baseline' beside this build")
    parser.add_argument("--no-files", action="store_true",
                        help="print the results as JSON instead of writing bench/results/ (comparisons that are not the suite's figures)")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--idle", type=int, default=10000)
    parser.add_argument("--typescript", action="store_true",
                        help="only the reload time of a 1,000-line TypeScript handler (fresh, cached) and its JavaScript twin")
    parser.add_argument("--stomp", action="store_true",
                        help="only an echo and a handler building a new string, each over raw WebSocket against over STOMP (100 connections, 32 B and 16 KiB)")
    parser.add_argument("--console", action="store_true",
                        help="only the echo scenario with a console page's live feed open on the endpoint, against none")
    parser.add_argument("--cluster", action="store_true",
                        help="only a broadcast to 1,000 connections over two nodes through Redis, against Socket.IO with its Redis adapter and one node")
    parser.add_argument("--compression", action="store_true",
                        help="only permessage-deflate: echo of 1 KiB JSON x 100, broadcast of 4 KiB JSON to 1,000, idle connections; against Bun and Node's ws with compression on")
    parser.add_argument("--scale", action="store_true",
                        help="only 5,000 busy connections and 50,000 idle ones (as many as the file limit allows), every server")
    parser.add_argument("--handlers", type=int, nargs="?", const=1000,
                        help="only a workspace of N one-endpoint projects (default 1,000): start-up, memory, threads, with --load eager and lazy")
    parser.add_argument("--instances", action="store_true",
                        help="only one endpoint on two cores: Switchboard with \"instances\": 2 against one, and Bun as two reusePort processes against one")
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of the echo and broadcast scenarios, servers interleaved; the median round is reported")
    options = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    servers = Servers("debug" if options.smoke else "release", options.baseline)
    if options.handlers:
        results = many_handlers(servers, 20 if options.smoke else options.handlers)
        print(json.dumps(results, indent=1))
        failed = [f"{mode}: {r['error']}" for mode, r in results.items() if "error" in r]
        if failed:
            sys.exit("handlers run failed: " + "; ".join(failed))
        return
    if options.typescript:
        print(json.dumps(typescript_load(servers, rounds=2 if options.smoke else 7), indent=1))
        return
    loadgen_binary = ROOT / "target" / ("debug" if options.smoke else "release") / "switchboard-loadgen"
    if options.stomp:
        print(json.dumps(stomp_echo(servers, loadgen_binary, options), indent=1))
        return
    if options.console:
        results = console_cost(servers, loadgen_binary, options)
        print(json.dumps(results, indent=1))
        if any("error" in result for result in results.values()):
            sys.exit("console run failed")
        return
    if options.compression:
        return print_by_scenario(compression(servers, loadgen_binary, options), "compression")
    if options.instances:
        if options.smoke:
            options.duration, options.warmup = 1.0, 0.3
        return print_by_scenario(instances(servers, loadgen_binary, options), "instances")
    if options.cluster:
        results = cluster_broadcast(servers, loadgen_binary, options)
        print(json.dumps(results, indent=1))
        failed = [f"{name}: {result['error']}" for name, result in results.items() if "error" in result]
        if failed:
            sys.exit("cluster run failed: " + "; ".join(failed))
        return
    order = ["switchboard"] + (["baseline"] if options.baseline else []) + ["rust-echo", "node-ws", "deno", "bun"]
    if options.smoke:
        order = ["switchboard", "rust-echo"] + (["baseline"] if options.baseline else [])
        options.duration, options.warmup, options.idle, options.repeat = 1.0, 0.3, 200, 1
    if options.only:
        # The TypeScript echo is measured only when asked for by name.
        order = [n for n in order + ["switchboard-ts"] if n in options.only.split(",")]
    available = servers.available()
    skipped = {name: why for name, why in available.items() if why and name in order}
    names = [n for n in order if n not in skipped]
    for name, why in skipped.items():
        print(f"skipping {name}: {why}", file=sys.stderr)
    if options.scale:
        results = scale(servers, names, loadgen_binary, options)
        print(json.dumps(results, indent=1))
        failed = [f"{kind}/{n}: {r['error']}" for kind in ("busy", "idle") for n, r in results[kind].items() if "error" in r]
        if failed:
            sys.exit("scale run failed: " + "; ".join(failed))
        return

    results = {}  # scenario -> server -> json
    rounds_of = {}  # scenario -> server -> [json], when repeated

    def measure(scenario, name, arguments, broadcast=False, timeout=120, keep=True, handler="echo"):
        """Starts `name`, runs the generator with arguments(url, process), stops the server."""
        try:
            process, url = start(servers, name, broadcast, handler)
        except Exception as error:
            result = {"error": f"server did not start: {error}"}
        else:
            try:
                args = arguments(url, process) + ["--label", name]
                if "--lean" in args:
                    # The correctness pass: the same load for a moment, every echo checked.
                    checked = [a for a in args if a != "--lean"]
                    checked[checked.index("--duration") + 1] = "0.5"
                    checked[checked.index("--warmup") + 1] = "0.2"
                    loadgen(loadgen_binary, checked, timeout)
                cpu_before = cpu_seconds(process.pid)
                result = loadgen(loadgen_binary, args, timeout)
                result["server_cpu_seconds"] = round(cpu_seconds(process.pid) - cpu_before, 3)
            except Exception as error:  # a failed run is reported, the others still run
                result = {"error": str(error)}
            finally:
                stop(process)
        rounds_of.setdefault(scenario, {}).setdefault(name, []).append(result)
        if keep:
            results.setdefault(scenario, {})[name] = result
        print(f"{scenario:<26} {name:<12} {summary(result)}", file=sys.stderr)

    def repeated(scenario, name, arguments, **kwargs):
        measure(scenario, name, arguments, keep=False, **kwargs)

    # Figures move between runs on a shared machine (by up to a third for the same binary), so
    # each scenario runs `repeat` rounds with the servers interleaved, and the median counts.
    receivers, broadcast_rounds = (50, 20) if options.smoke else (1000, 1000)
    for _ in range(options.repeat):
        for scenario, params in ECHO_SCENARIOS:
            handler = params.get("handler", "echo")
            shape = (["--binary"] if params.get("binary") else []) + (["--upper"] if handler == "lower" else [])
            for name in names:
                if handler != "echo" and name == "rust-echo":
                    continue
                repeated(scenario, name, lambda url, _: [
                    "--url", url, "--mode", "echo", "--connections", str(params["connections"]),
                    "--size", str(params["size"]), "--window", "1", "--duration", str(options.duration),
                    "--warmup", str(options.warmup), "--lean"] + shape, handler=handler)
        for name in names:
            repeated("broadcast to 1,000 conns", name, lambda url, _: [
                "--url", url, "--mode", "broadcast", "--connections", str(receivers), "--rounds", str(broadcast_rounds),
                "--size", "32"], broadcast=True, timeout=300)
    for scenario, by_server in rounds_of.items():
        for name, runs in by_server.items():
            results.setdefault(scenario, {})[name] = median_round(runs)

    for name in names:
        measure(f"{options.idle:,} idle conns", name, lambda url, process: [
            "--url", url, "--mode", "idle", "--connections", str(options.idle),
            "--server-pid", str(server_pid(process))], timeout=300)

    if "switchboard" in names:
        try:
            results["cold start"] = {"switchboard": {"mode": "cold", "milliseconds": cold_start(servers)}}
        except Exception as error:
            results["cold start"] = {"switchboard": {"error": str(error)}}
        print(f"{'cold start':<26} {'switchboard':<12} {summary(results['cold start']['switchboard'])}", file=sys.stderr)

    if options.no_files:
        print(json.dumps(results, indent=1))
        return
    if options.smoke:
        failed = [f"{s}/{n}: {r['error']}" for s, by in results.items() for n, r in by.items() if "error" in r]
        print(json.dumps(results, indent=1))
        if failed:
            sys.exit("smoke run failed: " + "; ".join(failed))
        return
    write_results(results, skipped)


def print_by_scenario(results, what):
    """Prints results (scenario -> server -> result) as JSON; fails the run if any failed."""
    print(json.dumps(results, indent=1))
    failed = [f"{s}/{n}: {r['error']}" for s, by in results.items() for n, r in by.items() if "error" in r]
    if failed:
        sys.exit(f"{what} run failed: " + "; ".join(failed))


def median_round(runs):
    """The run with the median headline figure, with every round's figure beside it."""
    good = [r for r in runs if "error" not in r]
    if len(good) < len(runs):
        return next(r for r in runs if "error" in r)
    ordered = sorted(good, key=lambda r: figure(r)[0])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    if len(runs) > 1:
        chosen["runs"] = [round(figure(r)[0], 1) for r in runs]
    return chosen


def cpu_seconds(pid):
    """CPU time (user + system, all threads) the process has used so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pid(process):
    """taskset execs the server, so the child is the server itself."""
    return process.pid


def figure(result):
    """The scenario's headline number and its unit (higher is better unless noted)."""
    mode = result.get("mode")
    if mode == "echo":
        return result["messages_per_second"], "msg/s"
    if mode == "broadcast":
        return result["deliveries_per_second"], "deliveries/s"
    if mode == "idle":
        return result["bytes_per_connection"] / 1024, "KiB/conn (lower is better)"
    if mode == "cold":
        return result["milliseconds"], "ms (lower is better)"
    if mode == "tsload":
        return result["fresh_ms"], "ms (lower is better)"
    return None, ""


def summary(result):
    if "error" in result:
        return "FAILED: " + result["error"]
    value, unit = figure(result)
    extra = ""
    if result.get("mode") == "echo":
        lat = result["latency_ms"]
        extra = f", {result['mb_per_second']:.1f} MB/s, p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, p99.9 {lat['p999']:.2f} ms"
        if "generator_cpu_us_per_message" in result:
            extra += f", generator CPU {result['generator_cpu_us_per_message']:.2f} µs/msg"
        if "generator_user_cpu_us_per_message" in result:
            extra += (f" ({result['generator_user_cpu_us_per_message']:.2f} its own code, the rest the kernel's TCP), "
                      f"generator core {result['generator_core_busy'] * 100:.0f}% busy")
    if result.get("mode") == "broadcast":
        extra = f", fan-out mean {result['fanout_ms']['mean']:.2f} ms, p99 {result['fanout_ms']['p99']:.2f} ms"
        if "server_cpu_seconds" in result:
            # Includes setting up the connections, which is small beside the deliveries.
            per_delivery = result["server_cpu_seconds"] / (result["connections"] * result["rounds"]) * 1e6
            extra += f", server CPU {per_delivery:.2f} µs/delivery"
    if "runs" in result:
        extra += f"; median of {', '.join(f'{v:,.0f}' for v in result['runs'])}"
    return f"{value:,.1f} {unit}{extra}"


def write_results(results, skipped):
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (RESULTS / "results.json").write_text(json.dumps({"date": stamp, "results": results, "skipped": skipped}, indent=1))
    lines = [f"# Benchmark results ({stamp})", "",
             f"Machine: {machine()}. Each server pinned to core 0, the load generator (bench/loadgen.rs) to core 1; "
             "one message in flight per connection. Echo: a correctness pass with every echo checked, then the measured run with the lean generator (raw frames, lengths checked). Echo and broadcast: the median of "
             "the rounds shown (servers interleaved round by round).", "",
             "Command: `bench/run.sh`", ""]
    for name, why in skipped.items():
        lines.append(f"- {name} not measured: {why}")
    lines.append("")
    for scenario, by_server in results.items():
        lines += [f"## {scenario}", "", "| server | result | vs Switchboard |", "| --- | --- | --- |"]
        base, _ = figure(by_server.get("switchboard", {})) if "error" not in by_server.get("switchboard", {"error": 1}) else (None, "")
        for name, result in by_server.items():
            if "error" in result:
                lines.append(f"| {name} | FAILED: {result['error']} | |")
                continue
            value, unit = figure(result)
            ratio = f"{value / base:.2f}x" if base else ""
            lines.append(f"| {name} | {summary(result)} | {ratio} |")
        lines += ["", f"![{scenario}]({chart(scenario, by_server)})", ""]
    (RESULTS / "RESULTS.md").write_text("\n".join(lines))
    print(f"wrote {RESULTS / 'RESULTS.md'}", file=sys.stderr)


def chart(scenario, by_server):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names, values, unit = [], [], ""
    for name, result in by_server.items():
        if "error" in result:
            continue
        value, unit = figure(result)
        names.append(name)
        values.append(value)
    file = "chart-" + "".join(c if c.isalnum() else "-" for c in scenario.lower()).strip("-") + ".png"
    fig, ax = plt.subplots(figsize=(6, 3.2))
    colors = ["#d9480f" if n == "switchboard" else "#868e96" for n in names]
    ax.barh(names[::-1], values[::-1], color=colors[::-1])
    ax.set_title(scenario)
    ax.set_xlabel(unit)
    for i, v in enumerate(values[::-1]):
        ax.text(v, i, f" {v:,.0f}" if v >= 100 else f" {v:,.2f}", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / file, dpi=100)
    plt.close(fig)
    return file


def machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB"


if __name__ == "__main__":
    main()
