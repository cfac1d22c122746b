"""The persona service on a real local Ray cluster (Ray Serve), through the real ingress.

One cluster per module (started by the fixture, its temp dir under pytest's tmp, shut down
after): three preview replicas of at most four sessions each. Each test runs its own ingress
on port 0 and speaks protocol v1 with a plain `websockets` client, as a browser would.
Waits are on messages and events with generous timeouts (the box has 2 shared cores).

A session a test closes ends on its replica after the resume grace. A test that needs an empty
cluster waits for that at its start, one that fills the cluster at its end; the others leave
their one or few closed sessions to end while the next test runs (twelve slots leave room),
and the fixture checks, before it shuts the cluster down, that every session ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time

import aiohttp
import pytest
import ray
import websockets
from ray import serve

from comfyui_persona.headless.cluster.deploy import ClusterError, deploy
from comfyui_persona.headless.cluster.ingress import ClusterIngress, create_ingress_app
from comfyui_persona.headless.cluster.settings import ClusterConfig
from comfyui_persona.headless.server.protocol import MEDIA_JPEG, parse_media_frame
from comfyui_persona.headless.server.site import start_server
from paths import REPO
from server_harness import next_frame, recv_json, wait_for_type

WORKFLOW = REPO / "workflows" / "persona_preview_chat.json"
SLOW = 60.0  # a first chat on a fresh replica loads the interpreter; 2 shared cores
REPLICAS, PER_REPLICA = 3, 4
VIDEO = {"format": "jpeg", "max_fps": 2}  # few, small frames: 12 sessions on 2 cores
HANG_TIMEOUT_S = 8.0

pytestmark = [
    pytest.mark.timeout(300),
    # serve.status() re-reads the autoscaling config; deploy.py says why metrics_interval_s is set.
    pytest.mark.filterwarnings("ignore:The `metrics_interval_s` field:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    config = ClusterConfig(
        replicas=REPLICAS, max_sessions=PER_REPLICA, max_queued_sessions=REPLICAS * PER_REPLICA + 1, queue_timeout_s=4.0,
        resume_grace_s=3.0, replica_cpus=0.5, max_sessions_per_ip=REPLICAS * PER_REPLICA + 2, replica_host="127.0.0.1", retry_after_s=7,
        health_check_period_s=2.0, health_check_timeout_s=20.0, drain_timeout_s=5.0, speech=False,
        recordings_dir=str(tmp_path_factory.mktemp("recordings")),
        # A frozen replica ends itself after this (well above any stall a loaded box causes);
        # the fault route lets a test freeze one through the real settings path.
        replica_hang_timeout_s=HANG_TIMEOUT_S, fault_injection=True,
    )
    ray.init(num_cpus=4, include_dashboard=False, namespace=config.namespace, log_to_driver=False,
             _temp_dir=str(tmp_path_factory.mktemp("ray")),
             _system_config={"metrics_report_interval_ms": 1000})  # the metrics test reads them soon
    try:
        deployment = deploy(config, WORKFLOW, warm_up=False)
        yield deployment
        asyncio.run(until_no_sessions(deployment))  # every session the tests closed has ended
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()


@contextlib.asynccontextmanager
async def ingress_on_port(deployment, **settings):
    config = deployment.config.model_copy(update=settings)
    ingress = ClusterIngress(config, deployment.replicas, deployment.store)
    app = create_ingress_app(ingress)
    runner, port = await start_server(app, "127.0.0.1", 0, ingress.gate)
    try:
        yield ingress, port
    finally:
        await asyncio.wait_for(runner.cleanup(), 30)


def connect(port):
    return websockets.connect(f"ws://127.0.0.1:{port}/persona/ws", open_timeout=SLOW, close_timeout=5, max_size=None)


async def open_session(port, **fields):
    ws = await connect(port)
    await ws.send(json.dumps({"type": "hello", "video": VIDEO, **fields}))
    ready = await recv_json(ws, SLOW)
    return ws, ready


async def replica_sessions(deployment) -> dict[str, list[str]]:
    """Every live replica's own list of the sessions it holds (its internal HTTP route)."""
    from comfyui_persona.headless.cluster.replica import replica_reports

    reports = await asyncio.wait_for(replica_reports(deployment.store), SLOW)
    return {name: body["sessions"] for name, body in reports.items()}


async def until_no_sessions(deployment, timeout: float = SLOW) -> None:
    """Sessions closed by a test end after their resume grace: wait for every replica to be empty."""
    deadline = time.monotonic() + timeout
    while any((await replica_sessions(deployment)).values()):
        assert time.monotonic() < deadline, "sessions did not end after their resume grace"
        await asyncio.sleep(0.5)


async def test_protocol_v1_through_the_ingress(cluster):
    async with ingress_on_port(cluster) as (ingress, port):
        async with connect(port) as ws:
            await ws.send(json.dumps({"type": "ping", "id": "p0"}))
            assert (await recv_json(ws))["code"] == "not_ready"
            await ws.send("{not json")
            assert (await recv_json(ws))["code"] == "bad_json"
            await ws.send(json.dumps({"type": "hello", "persona": "nobody-here"}))
            error = await recv_json(ws, SLOW)
            assert error["type"] == "error" and error["code"] == "unknown_persona"
            await ws.send(json.dumps({"type": "hello", "video": VIDEO}))
            ready = await recv_json(ws, SLOW)
            assert ready["type"] == "ready" and ready["protocol"] == 1 and ready["backend"] == "preview"
            assert ready["resumed"] is False and ready["history"] == []
            assert ready["replica"] and ready["session"]
            kind, _, _, payload = parse_media_frame(await next_frame(ws, SLOW))
            assert kind == MEDIA_JPEG and payload[:2] == b"\xff\xd8"
            await ws.send(json.dumps({"type": "ping", "id": "p1"}))
            assert (await wait_for_type(ws, "pong", SLOW))["id"] == "p1"
            await ws.send(json.dumps({"type": "chat", "id": "c1", "text": "please wave at me"}))
            directives = await wait_for_type(ws, "directives", SLOW, reply_to="c1")
            assert any(d["action"] == "wave" for d in directives["directives"])
            reply = await wait_for_type(ws, "reply", SLOW, reply_to="c1", done=True)
            assert reply["text"]
            await ws.send(json.dumps({"type": "action", "id": "a1",
                                      "directive": {"action": "sit", "expression": "neutral", "intensity": 0.5}}))
            performed = await wait_for_type(ws, "directives", SLOW, reply_to="a1")
            assert "sit" in [d["action"] for d in performed["directives"]]
            await ws.send(json.dumps({"type": "chat", "id": 5}))
            assert (await wait_for_type(ws, "error", SLOW))["code"] == "invalid"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/health") as answer:
                health = await answer.json()
                assert health["cluster"] is True and health["protocol"] == 1
            async with http.get(f"http://127.0.0.1:{port}/persona/personas") as answer:
                assert answer.status == 200 and (await answer.json())
            async with http.get(f"http://127.0.0.1:{port}/") as answer:
                assert answer.status == 200 and "<html" in (await answer.text()).lower()
            async with http.get(f"http://127.0.0.1:{port}/metrics") as answer:
                assert "persona_cluster_sessions_routed_total 1" in await answer.text()


async def test_sessions_spread_over_replicas_with_affinity_and_a_full_cluster_is_busy(cluster):
    await until_no_sessions(cluster)  # every slot free: earlier tests' closed sessions have ended
    async with ingress_on_port(cluster) as (ingress, port):
        opened = await asyncio.gather(*(open_session(port) for _ in range(REPLICAS * PER_REPLICA)))
        sockets = [ws for ws, _ in opened]
        try:
            readies = [ready for _, ready in opened]
            assert all(r["type"] == "ready" for r in readies), [r for r in readies if r["type"] != "ready"]
            by_replica: dict[str, set[str]] = {}
            for ready in readies:
                by_replica.setdefault(ready["replica"], set()).add(ready["session"])
            assert sorted(len(s) for s in by_replica.values()) == [PER_REPLICA] * REPLICAS
            # Each replica holds exactly the sessions the ingress said it serves.
            held = await replica_sessions(cluster)
            assert {name: set(ids) for name, ids in held.items()} == by_replica
            # Every session streams (from its one upstream socket).
            for ws in sockets:
                assert parse_media_frame(await next_frame(ws, SLOW))[0] == MEDIA_JPEG
            # Full: one more session waits for a slot, and gets busy with the retry hint after
            # queue_timeout_s (nobody left); the protocol's fatal busy closes with 1013.
            late, refused = await open_session(port)
            assert refused["code"] == "busy" and refused["fatal"] is True and refused["retry_after_s"] == 7
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(late.recv(), SLOW)
            assert closed.value.rcvd.code == 1013
            assert ingress.metrics.busy_total["queue_timeout"] == 1
            # Affinity across a reconnect, to this ingress and to another ingress instance
            # (it finds the session's replica in the directory): the session's own replica.
            async with ingress_on_port(cluster) as (_, other_port):
                for index, via in ((0, port), (1, other_port)):
                    first = readies[index]
                    await sockets[index].close()
                    again, ready = await open_session(via, session=first["session"])
                    sockets[index] = again
                    assert ready["resumed"] is True and ready["replica"] == first["replica"]
                    assert parse_media_frame(await next_frame(again, SLOW))[0] == MEDIA_JPEG
                    await again.close()
        finally:
            for ws in sockets:
                await ws.close()
    await until_no_sessions(cluster)


async def test_a_killed_replica_s_session_resumes_elsewhere_with_its_history(cluster):
    async with ingress_on_port(cluster) as (ingress, port):
        ws, ready = await open_session(port)
        session = ready["session"]
        states: list[dict] = []  # every state seen, whatever we wait for (none may be missed)
        sat = {"pose": "sitting", "activity": "idle"}  # sat down: a fresh session stands
        for n, text in enumerate(("please sit down", "smile for me")):
            await ws.send(json.dumps({"type": "chat", "id": f"c{n}", "text": text}))
            await _until(ws, states, lambda m, n=n: m["type"] == "reply" and m["reply_to"] == f"c{n}" and m["done"])
            if n == 0 and not (states and all(states[-1][k] == v for k, v in sat.items())):
                # Seated before the next message (a message cuts the action in progress short).
                await _until(ws, states, lambda m: m["type"] == "state" and all(m["state"][k] == v for k, v in sat.items()))
        placement = await asyncio.wait_for(cluster.store.where.remote(session), SLOW)
        checkpoint = await _until_checkpoint(cluster, session, replies=2, pose="sitting")
        seen = [e["text"] for e in checkpoint.history]
        assert "please sit down" in seen and "smile for me" in seen
        assert [text for role, text in checkpoint.conversation if role == "user"] == ["please sit down", "smile for me"]
        # Recording when the replica dies: the part so far stays, and the session goes on
        # recording in a new part on the replica that restores it.
        await ws.send(json.dumps({"type": "record", "id": "r1", "on": True}))
        first_part = (await wait_for_type(ws, "recording", SLOW, reply_to="r1"))["url"]
        for _ in range(3):  # a few frames into the file
            await next_frame(ws, SLOW)
        # Kill the replica process that holds the session (as a lost node would).
        killed_at = time.monotonic()
        ray.kill(ray.get_actor(placement.actor, namespace="serve"), no_restart=True)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), SLOW)
        assert closed.value.rcvd.code == 1012  # service restart: reconnect and resume
        again, resumed = await open_session(port, session=session)
        try:
            assert resumed["type"] == "ready", resumed
            ready_s = time.monotonic() - killed_at
            await next_frame(again, SLOW)
            frame_s = time.monotonic() - killed_at
            assert resumed["resumed"] is True and resumed["session"] == session
            assert resumed["replica"] != placement.replica
            assert [e["text"] for e in resumed["history"]] == seen
            assert resumed["state"]["pose"] == "sitting"
            assert [(r["url"], r["state"]) for r in resumed["recordings"]] == [(first_part, "finished")]
            second = await wait_for_type(again, "recording", SLOW, reply_to=None)
            assert second["on"] is True and second["url"] != first_part
            for _ in range(4):  # 2 s at max_fps 2: past the chunks made before the part began
                await next_frame(again, SLOW)
            await again.send(json.dumps({"type": "chat", "id": "c9", "text": "wave please"}))
            await wait_for_type(again, "reply", SLOW, reply_to="c9", done=True)
            # The interpreter's conversation went on from the restored one, on the new replica.
            after = await _until_checkpoint(cluster, session, replies=3)
            assert [text for role, text in after.conversation if role == "user"] == [
                "please sit down", "smile for me", "wave please"]
            assert ingress.metrics.failovers_total == 1
            await again.send(json.dumps({"type": "record", "id": "r2", "on": False}))
            stopped = await wait_for_type(again, "recording", SLOW, reply_to="r2")
            assert stopped["on"] is False and stopped["url"] == second["url"] and stopped["frames"] > 0
            async with aiohttp.ClientSession() as http:  # both parts download through the ingress
                for url in (first_part, second["url"]):
                    async with http.get(f"http://127.0.0.1:{port}{url}") as answer:
                        assert answer.status == 200, url
                        assert (await answer.read())[4:8] == b"ftyp"  # an MP4
            print(f"failover gap: kill → ready {ready_s:.2f} s, kill → first frame {frame_s:.2f} s")
        finally:
            await again.close()


async def _until(ws, states: list[dict], done, timeout: float = SLOW) -> dict:
    """Read JSON messages until `done(message)`, keeping every `state` in `states`."""
    deadline = time.monotonic() + timeout
    while True:
        message = await recv_json(ws, max(0.01, deadline - time.monotonic()), skip=("metrics",))
        if message["type"] == "state":
            states.append(message["state"])
        if done(message):
            return message


async def _until_checkpoint(cluster, session: str, replies: int, pose: str | None = None, timeout: float = SLOW):
    """The store's checkpoint once it holds `replies` finished persona replies (and `pose`)."""
    deadline = time.monotonic() + timeout
    while True:
        checkpoint = await asyncio.wait_for(cluster.store.get.remote(session), SLOW)
        done = [e for e in (checkpoint.history if checkpoint else []) if e["role"] == "persona" and e["done"]]
        if len(done) >= replies and (pose is None or (checkpoint.state or {}).get("pose") == pose):
            return checkpoint
        assert time.monotonic() < deadline, "no checkpoint with the replies"
        await asyncio.sleep(0.1)


async def test_autoscaling_adds_a_replica_for_a_queued_session_and_removes_it_when_idle(cluster):
    """A second application on the same cluster, one session per replica, 1..2 replicas."""
    config = cluster.config.model_copy(update={
        "app_name": "persona-autoscale", "autoscale": True, "replicas": 1, "min_replicas": 1, "max_replicas": 2,
        "max_sessions": 1, "upscale_delay_s": 0.5, "downscale_delay_s": 2.0, "autoscale_window_s": 2.0,
        "queue_timeout_s": SLOW, "resume_grace_s": 0.5})
    scaled = await asyncio.to_thread(deploy, config, WORKFLOW, warm_up=False)
    try:
        assert await asyncio.to_thread(_running_replicas, config.app_name) == 1
        async with ingress_on_port(scaled) as (ingress, port):
            first, ready = await open_session(port)
            queued_at = time.monotonic()
            second, later = await open_session(port)  # waits in the queue until a replica is added
            admitted_s = time.monotonic() - queued_at
            assert later["type"] == "ready", later
            assert later["replica"] != ready["replica"]
            assert await asyncio.to_thread(_running_replicas, config.app_name) == 2
            print(f"autoscaling: queued session admitted after {admitted_s:.1f} s")
            await first.close()
            await second.close()
            deadline = time.monotonic() + SLOW
            while await asyncio.to_thread(_running_replicas, config.app_name) != 1:
                assert time.monotonic() < deadline, "the idle replica was not removed"
                await asyncio.sleep(0.5)
    finally:
        await asyncio.to_thread(serve.delete, config.app_name)


def _running_replicas(app: str) -> int:
    status = serve.status().applications[app].deployments["PersonaReplica"]
    return status.replica_states.get("RUNNING", 0)


async def test_replicas_that_crash_at_start_fail_the_deploy_with_one_error(cluster, tmp_path):
    """Serve retries a replica whose constructor raises (here: its workflow file is missing on
    the node), then gives up; `deploy` says so as a ClusterError (one line in `persona deploy`)."""
    config = cluster.config.model_copy(update={"app_name": "persona-broken", "replicas": 1})
    with pytest.raises(ClusterError, match="the replicas did not start"):
        await asyncio.to_thread(deploy, config, tmp_path / "missing.json", warm_up=False)
    await asyncio.to_thread(serve.delete, config.app_name)


async def test_replicas_a_local_cluster_cannot_place_fail_the_deploy_at_once(cluster, tmp_path):
    """Serve waited for ever for replicas no node had room for, saying nothing (and Ctrl-C did
    not stop it): `deploy` names what they need against what the cluster has."""
    config = cluster.config.model_copy(update={"app_name": "persona-too-big", "replicas": 3, "replica_cpus": 2.0,
                                               "cluster": "local"})
    with pytest.raises(ClusterError, match=r"3 replicas need 6 CPUs \(2 each, --replica-cpus\) and the cluster has 4"):
        await asyncio.to_thread(deploy, config, WORKFLOW, warm_up=False)
    assert config.app_name not in serve.status().applications


async def test_one_address_holds_at_most_max_sessions_per_ip_across_the_cluster(cluster):
    """Replicas see every client as the ingress: the ingress counts sessions per real address."""
    opened = []

    async def session(**fields):
        ws, answer = await open_session(port, **fields)
        opened.append(ws)
        return ws, answer

    async with ingress_on_port(cluster, max_sessions_per_ip=2) as (ingress, port):
        try:
            first, a = await session()
            _, b = await session()
            _, refused = await session()
            assert a["type"] == b["type"] == "ready"
            assert refused["code"] == "busy" and "2 sessions" in refused["message"] and "retry_after_s" in refused
            await first.close()
            await _wait(lambda: ingress.sessions_per_ip["127.0.0.1"] == 1)
            _, c = await session()  # a slot freed: a new session again
            assert c["type"] == "ready"
            # At the cap, a session resumed by id is no new session: it is let through.
            _, resumed = await session(session=b["session"])
            assert resumed["type"] == "ready" and resumed["resumed"] is True and resumed["session"] == b["session"]
            # That took the session over from b's socket (closed with 4000): b's way out must not
            # make the ingress forget the session, which still streams (its count, the cap's
            # exception for a known id).
            assert await _closed_code(opened[1]) == 4000
            await _wait(lambda: ingress.sessions_per_ip["127.0.0.1"] == 2)
            assert ingress.attached.get(b["session"]) == resumed["replica"]
            _, again = await session(session=b["session"])  # a reload at the cap
            assert again["type"] == "ready" and again["resumed"] is True, again
            # An id the ingress has not attached is no way past the cap (any string would do).
            _, stranger = await session(session="Z" * 24)
            assert stranger["code"] == "busy", stranger
        finally:
            for ws in opened:
                await ws.close()


async def test_a_lease_for_a_session_its_replica_already_holds_is_given_back(cluster):
    """Two tabs resuming one session after a failover may both be leased a slot on the replica
    that restores it: the second connection's lease ends at once (it held a second admission
    slot for the session's whole life)."""
    async with ingress_on_port(cluster) as (_ingress, port):
        ws, ready = await open_session(port)
        try:
            for _ in range(40):  # a lease on the replica holding the session
                lease_id = secrets.token_urlsafe(12)
                stream = cluster.replicas.options(stream=True).lease.remote(lease_id)
                granted = await asyncio.wait_for(stream.__anext__(), SLOW)
                if granted["replica"] == ready["replica"]:
                    break
                stream.cancel()
            else:
                pytest.fail("no lease landed on the session's replica")
            async with websockets.connect(f"{granted['url']}?lease={lease_id}", open_timeout=SLOW,
                                          max_size=None) as second:
                await second.send(json.dumps({"type": "hello", "session": ready["session"], "takeover": True,
                                              "video": VIDEO}))
                assert (await recv_json(second, SLOW))["resumed"] is True

                async def lease_ends() -> None:
                    async for _ in stream:
                        pass

                reading = asyncio.ensure_future(_drain(second))  # the tab watches on
                try:
                    await asyncio.wait_for(lease_ends(), SLOW)
                    # ... while the session lives on (a lease bound to it would end only with it)
                    assert ready["session"] in (await replica_sessions(cluster))[ready["replica"]]
                    assert not reading.done()
                finally:
                    reading.cancel()
        finally:
            await ws.close()


async def test_the_ingress_remembers_the_newest_lost_replicas_only(cluster):
    """A dead replica's name is never leased again to clear it: `lost` (and the replicas the
    gallery routes may ask) grew by one per replica death for the ingress's whole life."""
    from comfyui_persona.headless.cluster.checkpoint import Placement
    from comfyui_persona.headless.cluster.ingress import MAX_LOST

    async with ingress_on_port(cluster) as (ingress, _port):
        for n in range(MAX_LOST + 8):
            ingress.known[f"dead{n}"] = Placement(f"dead{n}", "ws://127.0.0.1:9/persona/ws")
            ingress._mark_lost(f"dead{n}")
        assert list(ingress.lost) == [f"dead{n}" for n in range(8, MAX_LOST + 8)]
        assert not any(f"dead{n}" in ingress.known for n in range(8))


async def _drain(ws) -> None:
    while True:
        await ws.recv()


async def _wait(predicate, timeout: float = SLOW) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def freeze(placement, seconds: float) -> None:
    """Freeze the replica's event loop (the `fault_injection` route, its internal port)."""
    url = placement.url.replace("ws://", "http://").replace("/persona/ws", "/persona/cluster/fault")
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"freeze_s": seconds}, timeout=aiohttp.ClientTimeout(total=SLOW)) as answer:
            assert answer.status == 202, await answer.text()


async def _closed_code(ws, timeout: float = SLOW) -> int:
    """Read (and drop) messages until the socket closes; its close code."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    return closed.value.rcvd.code


async def test_a_hung_replica_is_removed_and_its_session_resumes_elsewhere_with_its_history(cluster):
    """A replica whose event loop stops (frozen through the fault route): no socket is read,
    no health check answered. Its watchdog ends the process after `replica_hang_timeout_s`,
    the ingress closes the client with 1012, the session resumes on another replica with its
    history, and Serve replaces the replica."""
    async with ingress_on_port(cluster) as (ingress, port):
        ws, ready = await open_session(port)
        session = ready["session"]
        await ws.send(json.dumps({"type": "chat", "id": "c1", "text": "please wave at me"}))
        await wait_for_type(ws, "reply", SLOW, reply_to="c1", done=True)
        checkpoint = await _until_checkpoint(cluster, session, replies=1)
        placement = await asyncio.wait_for(cluster.store.where.remote(session), SLOW)
        frozen_at = time.monotonic()
        await freeze(placement, 600.0)
        # Waits on the close itself; the bound only keeps a broken watchdog from hanging the run.
        assert await _closed_code(ws, HANG_TIMEOUT_S + SLOW) == 1012
        closed_s = time.monotonic() - frozen_at
        again, resumed = await open_session(port, session=session)
        try:
            assert resumed["type"] == "ready", resumed
            ready_s = time.monotonic() - frozen_at
            assert resumed["resumed"] is True and resumed["session"] == session
            assert resumed["replica"] != placement.replica
            assert [e["text"] for e in resumed["history"]] == [e["text"] for e in checkpoint.history]
            await next_frame(again, SLOW)
            frame_s = time.monotonic() - frozen_at
            with pytest.raises(ValueError):  # the hung replica's process is gone from Ray
                ray.get_actor(placement.actor, namespace="serve")
            print(f"hung replica: frozen → 1012 {closed_s:.2f} s (watchdog {HANG_TIMEOUT_S:g} s), "
                  f"→ resumed ready {ready_s:.2f} s, → first frame {frame_s:.2f} s")
        finally:
            await again.close()
    deadline = time.monotonic() + SLOW  # Serve starts a replacement (the next tests use all three)
    while await asyncio.to_thread(_running_replicas, cluster.config.app_name) < REPLICAS:
        assert time.monotonic() < deadline, "Serve did not replace the hung replica"
        await asyncio.sleep(0.5)


async def test_a_replica_too_slow_to_connect_is_not_taken_for_lost(cluster):
    """A replica that does not answer the ingress's handshake in `upstream_timeout_s` but is
    alive (a stall shorter than the watchdog's limit) is not given up: the client gets `busy`
    with a retry hint, and its session is not restored a second time on another replica;
    once the replica answers, the session resumes there."""
    async with ingress_on_port(cluster, upstream_timeout_s=1.0) as (ingress, port):
        ws, ready = await open_session(port)
        session = ready["session"]
        placement = await asyncio.wait_for(cluster.store.where.remote(session), SLOW)
        await freeze(placement, 4.0)
        await asyncio.sleep(0.3)  # the freeze starts a tenth of a second after its answer
        other, refused = await open_session(port, session=session)
        await other.close()
        assert refused["code"] == "busy" and "did not answer within 1 s" in refused["message"], refused
        assert refused["retry_after_s"] == 7
        assert placement.replica not in ingress.lost
        # Once it answers again: the same replica takes the session back (no second copy).
        deadline = time.monotonic() + SLOW
        while True:
            again, resumed = await open_session(port, session=session)
            if resumed["type"] == "ready":
                break
            await again.close()
            assert time.monotonic() < deadline, resumed
            await asyncio.sleep(0.5)
        try:
            assert resumed["resumed"] is True and resumed["replica"] == placement.replica
            assert await _closed_code(ws) == 4000  # the first connection's session moved
            held = await replica_sessions(cluster)
            assert [name for name, ids in held.items() if session in ids] == [placement.replica]
        finally:
            await again.close()


def _replica_states(app: str) -> dict[str, str]:
    """Replica id → Serve's state of it (RUNNING, STOPPING, ...), from Serve's controller
    (what `serve status` shows; the public `serve.status()` only counts them)."""
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    replicas = details["applications"][app]["deployments"]["PersonaReplica"]["replicas"]
    return {r["replica_id"]: str(r["state"]).rsplit(".", 1)[-1] for r in replicas}


async def _poll(predicate, what: str, timeout: float = SLOW):
    deadline = time.monotonic() + timeout
    while not (value := await predicate()):
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.3)
    return value


async def test_a_replica_being_removed_finishes_its_sessions_and_takes_no_new_one(cluster):
    """A redeploy from 2 replicas to 1 with a session on each: Serve replaces the replicas
    (every deploy is a new version) one at a time, draining each. The draining replica's
    session goes on (frames, a chat answered) while a new session is placed elsewhere, though
    it has a free slot; it stops once its session has ended."""
    config = cluster.config.model_copy(update={
        "app_name": "persona-drain", "replicas": 2, "max_sessions": 2, "drain_timeout_s": 2 * SLOW,
        "resume_grace_s": 0.5, "queue_timeout_s": SLOW})
    scaled = await asyncio.to_thread(deploy, config, WORKFLOW, warm_up=False)
    shrinking = None
    opened = []
    try:
        async with ingress_on_port(scaled) as (ingress, port):
            for _ in range(3):  # 2 + 1 over the two replicas, whichever way Serve places them
                opened.append(await open_session(port))
            by_replica: dict[str, list] = {}
            for ws, ready in opened:
                assert ready["type"] == "ready", ready
                by_replica.setdefault(ready["replica"], []).append(ws)
            assert sorted(len(v) for v in by_replica.values()) == [1, 2]
            await next(v for v in by_replica.values() if len(v) == 2).pop().close()  # one session each now
            await _poll(lambda: _sessions_on(scaled, by_replica, 1), "a replica kept the closed session")
            # Redeploy with one replica; `deploy` returns once the old replicas are gone.
            shrinking = asyncio.ensure_future(asyncio.to_thread(
                deploy, config.model_copy(update={"replicas": 1}), WORKFLOW, warm_up=False))
            states = await _poll(lambda: _stopping(config.app_name), "no replica started draining")
            draining = next(r for r, state in states.items() if state == "STOPPING")
            assert draining in by_replica
            drained_ws = by_replica[draining][0]
            # The draining replica's session goes on: frames, and a chat answered.
            await drained_ws.send(json.dumps({"type": "chat", "id": "d1", "text": "please wave at me"}))
            await wait_for_type(drained_ws, "reply", SLOW, reply_to="d1", done=True)
            await next_frame(drained_ws, SLOW)
            # A new session goes to the other replica, not to the draining one's free slot.
            ws, ready = await open_session(port)
            opened.append((ws, ready))
            assert ready["type"] == "ready" and ready["replica"] != draining, ready
            assert (await asyncio.to_thread(_replica_states, config.app_name))[draining] == "STOPPING"
            await next_frame(drained_ws, SLOW)  # still streaming
            # Its session ends (the viewer leaves, the resume grace runs out): the replica stops.
            ended_at = time.monotonic()
            await drained_ws.close()
            await _poll(lambda: _gone(config.app_name, draining), "the drained replica did not stop")
            print(f"drain: replica stopped {time.monotonic() - ended_at:.1f} s after its last viewer left")
            for ws, _ in opened:  # the other old replica drains next: let it go too
                await ws.close()
            await asyncio.wait_for(shrinking, SLOW)
    finally:
        for ws, _ in opened:
            await ws.close()
        if shrinking is not None:
            await asyncio.gather(shrinking, return_exceptions=True)
        await asyncio.to_thread(serve.delete, config.app_name)


async def _sessions_on(deployment, by_replica: dict, count: int) -> bool:
    sessions = await replica_sessions(deployment)
    return all(len(sessions.get(name, [])) == count for name in by_replica)


async def _stopping(app: str) -> dict[str, str] | None:
    states = await asyncio.to_thread(_replica_states, app)
    return states if "STOPPING" in states.values() else None


async def _gone(app: str, replica: str) -> bool:
    return replica not in await asyncio.to_thread(_replica_states, app)


async def test_replicas_export_their_sessions_through_ray_metrics(cluster):
    """Each replica's `persona_replica_*` gauges reach Ray's Prometheus endpoint on its node
    (what a Prometheus scraping the cluster reads), tagged with the replica's name."""
    import re

    node = ray._private.worker.global_worker.node
    url = f"http://{node.node_ip_address}:{node.metrics_export_port}/metrics"

    async def sample(http, name: str, replica: str) -> float | None:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=SLOW)) as answer:
            text = await answer.text()
        for line in text.splitlines():
            if line.startswith(f"ray_{name}{{") and f'replica="{replica}"' in line:
                return float(line.rsplit(" ", 1)[1])
        return None

    async with ingress_on_port(cluster) as (_, port):
        ws, ready = await open_session(port)
        try:
            await next_frame(ws, SLOW)
            async with aiohttp.ClientSession() as http:
                deadline = time.monotonic() + SLOW
                while (await sample(http, "persona_replica_sessions_connected", ready["replica"]) or 0) < 1:
                    assert time.monotonic() < deadline, "no persona_replica_sessions_connected ≥ 1 from the replica"
                    await asyncio.sleep(0.5)
                assert (await sample(http, "persona_replica_sessions", ready["replica"])) >= 1
                for name in ("persona_replica_fps_mean", "persona_replica_latency_ms_mean"):
                    assert await sample(http, name, ready["replica"]) is not None, name
            assert re.match(r"^[a-z0-9]+$", ready["replica"])
        finally:
            await ws.close()


async def test_a_recording_larger_than_the_proxy_s_piece_streams_through_the_ingress(cluster):
    """Recordings are fetched through the ingress from the replica that has the file; the
    ingress passes it on piece by piece, so a large file never sits whole in its memory
    (Python allocations measured with tracemalloc while it streams 24 MiB)."""
    import hashlib
    import os
    import tracemalloc
    from pathlib import Path

    from comfyui_persona.headless.cluster.ingress import GALLERY_CHUNK_BYTES
    from comfyui_persona.headless.cluster.recordings import replica_folder

    size = 24 * 2**20
    assert size > 16 * GALLERY_CHUNK_BYTES
    token = secrets.token_urlsafe(24)
    async with ingress_on_port(cluster) as (_, port):
        ws, ready = await open_session(port)  # the ingress learns a live replica
        path = replica_folder(Path(cluster.config.recordings_dir), ready["replica"]) / f"{token}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        body = os.urandom(size)
        path.write_bytes(body)
        expected = hashlib.sha256(body).hexdigest()
        del body
        try:
            digest = hashlib.sha256()
            tracemalloc.start()
            try:
                async with aiohttp.ClientSession() as http:
                    async with http.get(f"http://127.0.0.1:{port}/persona/recordings/{token}.mp4",
                                        timeout=aiohttp.ClientTimeout(total=SLOW)) as answer:
                        assert answer.status == 200 and answer.headers["Content-Type"] == "video/mp4"
                        assert int(answer.headers["Content-Length"]) == size
                        async for piece in answer.content.iter_chunked(64 * 1024):
                            digest.update(piece)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert digest.hexdigest() == expected
            print(f"gallery stream: {size / 2**20:.0f} MiB through the ingress, peak Python allocations "
                  f"{peak / 2**20:.1f} MiB")
            assert peak < size / 4, f"{peak} bytes held while streaming a {size}-byte file"
            async with aiohttp.ClientSession() as http:  # a token no replica has: 404, not a hang
                async with http.get(f"http://127.0.0.1:{port}/persona/recordings/{'B' * 32}.mp4") as answer:
                    assert answer.status == 404
        finally:
            await ws.close()
            path.unlink()
