"""Load test of `persona deploy` (Ray Serve replicas behind the ingress) against a single-process
`persona serve` at the same load on the same machine, plus the failover gap.

Both phases use serve_load.py's client: N sessions, each sending a directive every
`--action-every` seconds (actions and chat alternating) while it receives the stream; fps per
session is frames received / time after `--warm`, latency is the server's directive-to-frame
`metrics.latency_ms`. The cluster phase starts a local Ray cluster in this process (its temp
dir removed after), deploys R preview replicas of ceil(N/R) sessions each, runs the ingress on
port 0 here, samples every replica's RSS, then `--failovers` times: opens a session, chats,
kills the replica holding it (`ray.kill`, as a lost node), reconnects with the session id and
times kill → `ready` (resumed, with history) and kill → first frame on another replica; and
`--hangs` times: the same with the replica's event loop frozen instead (the `fault_injection`
route), which its watchdog (`--hang-timeout`, `replica_hang_timeout_s`) ends: freeze → the
client's close (1012), → `ready` elsewhere, → first frame.

    .venv/bin/python benchmarks/serve_cluster.py --sessions 4 --replicas 2 --duration 30

Goal (issue 14): per-session fps and p95 within 10 % of the single process at the same load
per core. On one small machine the cluster pays for Ray's own processes and a proxy hop on the
same cores; the result file says by how much.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import websockets
from serve_load import _percentile, _session

from record import cpu_model, ensure_package, result_path, write_result

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "workflows" / "persona_preview_chat.json"


def _summary(results: dict) -> dict:
    fps = [results[i]["fps"] for i in sorted(results)]
    latencies = [v for i in results for v in results[i]["latencies_ms"]]
    return {
        "fps_per_session": [round(v, 2) for v in fps],
        "fps_min": round(min(fps), 2), "fps_median": round(statistics.median(fps), 2),
        "latency_ms_p50": _percentile(latencies, 50), "latency_ms_p95": _percentile(latencies, 95),
        "latency_samples": len(latencies),
        "errors": sorted({code for i in results for code in results[i]["errors"]}),
    }


def single_process(args) -> dict:
    command = [sys.executable, "-m", "comfyui_persona.headless", "serve", "--port", "0", "--quiet", "--no-speech",
               "--max-sessions", str(args.sessions), "--rate", "50"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    try:
        match = re.search(r"ws://([\d.]+):(\d+)/persona/ws", server.stdout.readline())
        if not match:
            raise SystemExit("persona serve did not start")
        url = f"ws://{match.group(1)}:{match.group(2)}/persona/ws"
        results: dict = {}

        async def run() -> None:
            await asyncio.gather(*[_session(url, i, args.duration, args.warm, args.action_every, results, False)
                                   for i in range(args.sessions)])

        asyncio.run(run())
    finally:
        server.terminate()
        server.wait(timeout=30)
    return _summary(results)


def cluster(args) -> tuple[dict, dict]:
    import ray
    from ray import serve

    from comfyui_persona.headless.cluster.deploy import deploy
    from comfyui_persona.headless.cluster.settings import ClusterConfig
    from comfyui_persona.headless.server.site import start_server

    cpus = os.cpu_count() or 2
    config = ClusterConfig(
        replicas=args.replicas, max_sessions=math.ceil(args.sessions / args.replicas), speech=False,
        messages_per_second=50, replica_cpus=cpus / (args.replicas + 1), replica_host="127.0.0.1",
        resume_grace_s=5.0, health_check_period_s=2.0, drain_timeout_s=5.0,
        replica_hang_timeout_s=args.hang_timeout, fault_injection=args.hangs > 0,
    )
    temp = tempfile.mkdtemp(prefix="psc")  # short: Ray's socket paths must fit 107 bytes
    ray.init(num_cpus=cpus, include_dashboard=False, namespace=config.namespace, log_to_driver=False, _temp_dir=temp)
    try:
        deployment = deploy(config, WORKFLOW, warm_up=True)
        return asyncio.run(_cluster_load(args, deployment, start_server))
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


async def _replicas(deployment) -> dict:
    from comfyui_persona.headless.cluster.replica import replica_reports

    return await replica_reports(deployment.store)


async def _cluster_load(args, deployment, start_server) -> tuple[dict, dict]:
    from ray import serve

    runner, port = await start_server(deployment.app(), "127.0.0.1", 0, deployment.ingress.gate)
    url = f"ws://127.0.0.1:{port}/persona/ws"
    try:
        results: dict = {}
        rss: dict[str, float] = {}

        async def sample_rss() -> None:
            await asyncio.sleep(args.duration * 0.8)
            for name, body in (await _replicas(deployment)).items():
                rss[name] = round(body["rss_mib"], 1)

        await asyncio.gather(sample_rss(), *[_session(url, i, args.duration, args.warm, args.action_every,
                                                      results, False) for i in range(args.sessions)])
        load = _summary(results)
        load["rss_mib_per_replica"] = rss
        load["sessions_per_replica"] = deployment.config.max_sessions
        gaps = []
        def states() -> dict:
            return serve.status().applications[deployment.config.app_name].deployments[
                "PersonaReplica"].replica_states

        hangs = []
        for trial in range(args.failovers + args.hangs):
            hang = trial >= args.failovers
            gap = await _failover(url, deployment, trial, hang)
            (hangs if hang else gaps).append(gap)
            # Next trial only with every replica back: first the controller notices the death
            # (fewer running, or one starting), then the replacement runs.
            deadline = time.monotonic() + 120
            noticed = False
            while True:
                now = states()
                noticed = noticed or now.get("RUNNING", 0) < args.replicas or now.get("STARTING", 0) > 0
                if noticed and now.get("RUNNING", 0) == args.replicas and not now.get("STARTING"):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit("the killed replica was not replaced within 120 s")
                await asyncio.sleep(0.2)
        failover = {
            "failover_ready_ms": [g[0] for g in gaps], "failover_first_frame_ms": [g[1] for g in gaps],
            "failover_ready_ms_median": statistics.median(g[0] for g in gaps) if gaps else None,
            "failover_first_frame_ms_max": max(g[1] for g in gaps) if gaps else None,
            # reply received by the client → its checkpoint readable in the store
            "checkpoint_after_reply_ms": [g[2] for g in gaps],
        }
        if hangs:
            failover.update({
                "hang_timeout_s": args.hang_timeout,
                "hang_closed_ms": [g[3] for g in hangs], "hang_ready_ms": [g[0] for g in hangs],
                "hang_first_frame_ms": [g[1] for g in hangs],
            })
        return load, failover
    finally:
        await runner.cleanup()


async def _recv(ws, want, timeout=60.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        data = await asyncio.wait_for(ws.recv(), max(0.01, deadline - loop.time()))
        if want(data):
            return data


async def _failover(url: str, deployment, trial: int, hang: bool = False) -> tuple[float, float, float, float]:
    """One failover: (→ ready, → first frame, checkpoint wait, → close) in ms from the kill
    (or, with `hang`, from the freeze)."""
    import aiohttp
    import ray

    is_json = lambda kind: lambda d: isinstance(d, str) and json.loads(d)["type"] == kind  # noqa: E731
    ws = await websockets.connect(url, max_size=None, open_timeout=60)
    await ws.send(json.dumps({"type": "hello"}))
    ready = json.loads(await _recv(ws, is_json("ready")))
    await ws.send(json.dumps({"type": "chat", "id": f"f{trial}", "text": "please wave"}))
    await _recv(ws, lambda d: isinstance(d, str) and json.loads(d).get("type") == "reply" and json.loads(d)["done"])
    placement = await deployment.store.where.remote(ready["session"])
    waited = time.perf_counter()
    while True:  # the checkpoint with the reply is in the store (sent by the replica, not awaited)
        checkpoint = await deployment.store.get.remote(ready["session"])
        if checkpoint is not None and any(e["role"] == "persona" and e["done"] for e in checkpoint.history):
            break
        if time.perf_counter() - waited > 60:
            raise SystemExit("no checkpoint with the reply within 60 s")
        await asyncio.sleep(0.05)
    checkpoint_wait_ms = (time.perf_counter() - waited) * 1000
    killed = time.perf_counter()
    if hang:
        fault = placement.url.replace("ws://", "http://").replace("/persona/ws", "/persona/cluster/fault")
        async with aiohttp.ClientSession() as http, http.post(fault, json={"freeze_s": 600}) as answer:
            assert answer.status == 202, await answer.text()
    else:
        ray.kill(ray.get_actor(placement.actor, namespace="serve"), no_restart=True)
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 120)
    except websockets.ConnectionClosed:
        pass
    closed_ms = (time.perf_counter() - killed) * 1000
    again = await websockets.connect(url, max_size=None, open_timeout=60)
    await again.send(json.dumps({"type": "hello", "session": ready["session"]}))
    resumed = json.loads(await _recv(again, is_json("ready")))
    ready_ms = (time.perf_counter() - killed) * 1000
    await _recv(again, lambda d: isinstance(d, bytes) and d[0] == 1)
    frame_ms = (time.perf_counter() - killed) * 1000
    assert resumed["resumed"] and resumed["replica"] != placement.replica and resumed["history"], resumed
    await again.close()
    return round(ready_ms, 1), round(frame_ms, 1), round(checkpoint_wait_ms, 1), round(closed_ms, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of streaming per session")
    parser.add_argument("--warm", type=float, default=5.0, help="seconds ignored at the start")
    parser.add_argument("--action-every", type=float, default=2.0, help="seconds between directives per session")
    parser.add_argument("--failovers", type=int, default=3, help="replica kills to time")
    parser.add_argument("--hangs", type=int, default=0, help="replica freezes to time (the watchdog ends them)")
    parser.add_argument("--hang-timeout", type=float, default=5.0, help="replica_hang_timeout_s for --hangs")
    parser.add_argument("--no-baseline", action="store_true", help="skip the single-process phase")
    parser.add_argument("--tag", default="", help="suffix for the result file name")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    if not 1 <= args.sessions <= 64 or not 1 <= args.replicas <= 16 or not 5 <= args.duration <= 3600:
        parser.error("--sessions 1..64, --replicas 1..16, --duration 5..3600 s")
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints where a stuck run waits
    ensure_package()
    single = None if args.no_baseline else single_process(args)
    load, failover = cluster(args)
    metrics = {"cluster": load, "single_process": single, **failover}
    if single:
        metrics["fps_median_ratio_cluster_vs_single"] = round(load["fps_median"] / single["fps_median"], 3)
        if load["latency_ms_p95"] and single["latency_ms_p95"]:
            metrics["latency_p95_ratio_cluster_vs_single"] = round(load["latency_ms_p95"] / single["latency_ms_p95"], 3)
    config = {"sessions": args.sessions, "replicas": args.replicas, "duration_s": args.duration, "warm_s": args.warm,
              "action_every_s": args.action_every, "failovers": args.failovers, "hangs": args.hangs,
              "hang_timeout_s": args.hang_timeout, "backend": "preview", "speech": False,
              "cpus": os.cpu_count(), "workflow": "workflows/persona_preview_chat.json"}
    print(json.dumps(metrics, indent=2))
    if not args.no_save:
        path = result_path("serve_cluster", "cpu", args.tag)
        write_result(path, "serve_cluster", cpu_model(), config, metrics)
        print(f"saved {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
