#!/usr/bin/env python3
"""The official Centrifugo Python SDK (centrifuge-python, from PyPI) against the real server's
Centrifugo-compatible endpoint, in JSON and in Protobuf. The server is the binary's `dev`
mode on loopback port 0; the backend side is our gRPC API (stubs generated at run time, as in
examples/python/send.py); tokens come from the binary's `token` command.

    pip install -r tests/sdk/requirements.txt
    BOUNDARY_BIN=target/debug/boundary-realtime python3 tests/sdk/centrifuge_python_test.py

centrifuge-python 0.7.0 has no event for `message` pushes (direct messages): the JavaScript
SDK's tests cover those.
"""
import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import time
import unittest

import grpc
from centrifuge import (Client, ClientEventHandler, SubscriptionEventHandler)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "examples", "python"))
from send import load_stubs  # noqa: E402

# unittest runs coroutines in asyncio's debug mode, whose "Executing <Task ...> took 0.1
# seconds" warnings about a busy machine are noise in the test output.
logging.getLogger("asyncio").setLevel(logging.ERROR)

BIN = os.environ.get("BOUNDARY_BIN", os.path.join(ROOT, "target", "debug", "boundary-realtime"))
WAIT = 10.0


class Server:
    """`boundary-realtime dev` on loopback port 0, read from its banner."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [BIN, "dev", "--http-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        banner = ""
        deadline = time.monotonic() + 15
        while "Ctrl-C stops the server" not in banner:
            line = self.proc.stdout.readline()
            if not line or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"the server did not start: {banner}")
            banner += line
        self.url = re.search(r"Centrifugo\s+(ws://\S+)", banner).group(1)
        grpc_addr = re.search(r"gRPC\s+(\S+)", banner).group(1)
        self.secret = re.search(r"REALTIME_JWT__SECRET=(\S+)", banner).group(1)
        key = re.search(r"^\s+API key\s+(\S+)$", banner, re.M).group(1)
        self.pb, pb_grpc = load_stubs()
        self.channel = grpc.insecure_channel(grpc_addr)
        self.rt = pb_grpc.RealtimeServiceStub(self.channel)
        self.auth = [("authorization", f"Bearer {key}")]

    def token(self, sub, ttl=3600, topics=("news:*", "room:*")):
        args = [BIN, "token", "--sub", sub, "--ttl", str(ttl)]
        for t in topics:
            args += ["--topic", t]
        env = {**os.environ, "REALTIME_JWT__SECRET": self.secret}
        return subprocess.check_output(args, env=env, text=True).strip()

    def call(self, method, request):
        return getattr(self.rt, method)(request, metadata=self.auth, timeout=5)

    def publish(self, topic, payload):
        msg = self.pb.Message(type="t", payload_json=json.dumps(payload))
        return self.call("Publish", self.pb.PublishRequest(topic=topic, message=msg))

    def stop(self):
        self.channel.close()
        self.proc.terminate()
        self.proc.wait(10)


class Recorder(ClientEventHandler, SubscriptionEventHandler):
    """Records every event, in order, by name."""

    def __init__(self):
        self.events = []

    def of(self, name):
        return [ctx for n, ctx in self.events if n == name]

    def __getattribute__(self, name):
        if name.startswith("on_"):
            async def record(ctx):
                self.events.append((name[3:], ctx))
            return record
        return object.__getattribute__(self, name)


async def until(what, cond, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def payload(pub):
    """The message object's payload: `data` is the message object (bytes in Protobuf)."""
    data = pub.data
    if isinstance(data, (bytes, bytearray)):
        data = json.loads(data)
    return data["payload"]


SERVER = None


class Base:
    """The scenarios, run once per codec (the subclasses set PROTOBUF)."""
    PROTOBUF = False

    def client(self, user, token=None, get_token=None):
        rec = Recorder()
        c = Client(SERVER.url, events=rec, token=token or SERVER.token(user), get_token=get_token,
                   use_protobuf=self.PROTOBUF, min_reconnect_delay=0.05, max_reconnect_delay=0.2,
                   proxy=None)
        self.addAsyncCleanup(c.disconnect)
        return c, rec

    def name(self, what):
        return f"{what}-{'pb' if self.PROTOBUF else 'json'}"

    async def test_subscribe_and_receive(self):
        c, rec = self.client(self.name("basic"))
        topic = f"news:{self.name('basic')}"
        sub = c.new_subscription(topic, events=rec)
        await c.connect()
        await sub.subscribe()
        await until("subscribed", lambda: rec.of("subscribed"))
        connected = rec.of("connected")[0]
        page = SERVER.call("ListConnections", SERVER.pb.ListConnectionsRequest(
            user_id=self.name("basic")))
        self.assertEqual([x.connection_id for x in page.connections], [connected.client])
        self.assertEqual(page.connections[0].protocol,
                         "centrifuge-protobuf" if self.PROTOBUF else "centrifuge-json")
        r = SERVER.publish(topic, {"n": 1})
        await until("the publication", lambda: rec.of("publication"))
        pub = rec.of("publication")[0].pub
        self.assertEqual((pub.offset, payload(pub)), (r.offset, {"n": 1}))

    async def test_recovery_after_a_disconnect(self):
        c, rec = self.client(self.name("recover"))
        topic = f"news:{self.name('recover')}"
        sub = c.new_subscription(topic, events=rec)
        await c.connect()
        await sub.subscribe()
        await until("subscribed", lambda: rec.of("subscribed"))
        SERVER.publish(topic, 1)
        await until("the first publication", lambda: len(rec.of("publication")) == 1)
        await c.disconnect()
        for i in (2, 3, 4):
            SERVER.publish(topic, i)
        await c.connect()
        await until("resubscribed", lambda: len(rec.of("subscribed")) == 2)
        again = rec.of("subscribed")[1]
        self.assertTrue(again.was_recovering)
        self.assertTrue(again.recovered)
        await until("the missed publications", lambda: len(rec.of("publication")) == 4)
        SERVER.publish(topic, 5)
        await until("a live one", lambda: len(rec.of("publication")) == 5)
        got = [(p.pub.offset, payload(p.pub)) for p in rec.of("publication")]
        self.assertEqual(got, [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)])

    async def test_unrecoverable_resubscribe(self):
        c, rec = self.client(self.name("lost"))
        topic = f"news:{self.name('lost')}"
        sub = c.new_subscription(topic, events=rec)
        await c.connect()
        await sub.subscribe()
        await until("subscribed", lambda: rec.of("subscribed"))
        SERVER.publish(topic, 0)
        await until("a publication", lambda: rec.of("publication"))
        await c.disconnect()
        for i in range(1, 103):  # the dev server keeps 100 per topic
            SERVER.publish(topic, i)
        await c.connect()
        await until("resubscribed", lambda: len(rec.of("subscribed")) == 2)
        again = rec.of("subscribed")[1]
        self.assertTrue(again.was_recovering)
        self.assertFalse(again.recovered)
        SERVER.publish(topic, "live")
        await until("live delivery", lambda: len(rec.of("publication")) == 2)
        self.assertEqual(payload(rec.of("publication")[1].pub), "live")

    async def test_refresh_before_exp(self):
        user = self.name("refresh")
        asked = []

        async def get_token():
            asked.append(1)
            return SERVER.token(user)
        # 3 s, not less: with whole-second exp and ttl, a 2 s token left the SDK under a second
        # to refresh, and on a busy machine it sometimes lost that race (a reconnect).
        c, rec = self.client(user, token=SERVER.token(user, ttl=3), get_token=get_token)
        await c.connect()
        await until("getToken", lambda: asked, timeout=6)
        await asyncio.sleep(3.5)  # past the first token's exp
        self.assertEqual(len(rec.of("connected")), 1)
        self.assertEqual(rec.of("disconnected"), [])

    async def test_expired_token_then_get_token(self):
        user = self.name("expired")
        stale = SERVER.token(user, ttl=1)
        await asyncio.sleep(1.1)
        asked = []

        async def get_token():
            asked.append(1)
            return SERVER.token(user)
        c, rec = self.client(user, token=stale, get_token=get_token)
        await c.connect()
        await until("connected", lambda: rec.of("connected"))
        self.assertEqual(len(asked), 1)

    async def test_disconnect_codes(self):
        user = self.name("kick")
        c, rec = self.client(user)
        await c.connect()
        await until("connected", lambda: rec.of("connected"))
        SERVER.call("Disconnect", SERVER.pb.DisconnectRequest(
            user_id=user, code=4000, reason="come back"))
        await until("reconnected", lambda: len(rec.of("connected")) == 2)
        self.assertIn((4000, "come back"), [(x.code, x.reason) for x in rec.of("connecting")])
        SERVER.call("Disconnect", SERVER.pb.DisconnectRequest(
            user_id=user, code=4501, reason="banned"))
        await until("disconnected", lambda: rec.of("disconnected"))
        d = rec.of("disconnected")[0]
        self.assertEqual((d.code, d.reason), (4501, "banned"))
        await asyncio.sleep(0.5)
        self.assertEqual(len(rec.of("connected")), 2, "no reconnect after a terminal code")

    async def test_server_side_subscribe(self):
        user = self.name("server-sub")
        c, rec = self.client(user)
        await c.connect()
        await until("connected", lambda: rec.of("connected"))
        topic = f"alerts:{self.name('x')}"
        r = SERVER.call("Subscribe", SERVER.pb.SubscribeRequest(topic=topic, user_id=user))
        self.assertEqual(r.connections, 1)
        await until("subscribed", lambda: rec.of("subscribed"))
        self.assertEqual(rec.of("subscribed")[0].channel, topic)
        SERVER.publish(topic, "alert")
        await until("the publication", lambda: rec.of("publication"))
        p = rec.of("publication")[0]
        self.assertEqual((p.channel, payload(p.pub)), (topic, "alert"))

    async def test_presence_and_history(self):
        user = self.name("presence")
        c, rec = self.client(user)
        topic = f"room:{self.name('p')}"
        sub = c.new_subscription(topic, events=rec)
        await c.connect()
        await sub.subscribe()
        await until("subscribed", lambda: rec.of("subscribed"))
        client_id = rec.of("connected")[0].client
        presence = await sub.presence()
        self.assertEqual(list(presence.clients), [client_id])
        self.assertEqual(presence.clients[client_id].user, user)
        stats = await sub.presence_stats()
        self.assertEqual((stats.num_clients, stats.num_users), (1, 1))
        for i in (1, 2, 3):
            SERVER.publish(topic, i)
        h = await sub.history(limit=2)
        self.assertEqual([(p.offset, payload(p)) for p in h.publications], [(1, 1), (2, 2)])
        self.assertEqual(h.offset, 3)


class Json(Base, unittest.IsolatedAsyncioTestCase):
    PROTOBUF = False


class Protobuf(Base, unittest.IsolatedAsyncioTestCase):
    PROTOBUF = True


def setUpModule():
    global SERVER
    SERVER = Server()


def tearDownModule():
    SERVER.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
