#!/usr/bin/env python3
"""A backend in Python calling boundary-realtime over gRPC: SendToUser, Broadcast, Publish,
then ListConnections. The stubs are generated from proto/ at run time with grpcio-tools, so
nothing generated is committed.

    pip install -r examples/python/requirements.txt
    REALTIME_API_KEY=... python3 examples/python/send.py

Environment: REALTIME_GRPC (default 127.0.0.1:50051), REALTIME_API_KEY (required),
REALTIME_USER (default dev-user), REALTIME_TOPIC (default news).
"""
import json
import os
import sys
import tempfile

import grpc
from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_DIR = os.path.join(ROOT, "proto")


def load_stubs():
    out = tempfile.mkdtemp(prefix="realtime-stubs-")
    proto = os.path.join(PROTO_DIR, "boundary/realtime/v1/realtime.proto")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    code = protoc.main(["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out}",
                        f"--grpc_python_out={out}", proto])
    if code != 0:
        sys.exit(f"protoc failed on {proto}")
    sys.path.insert(0, out)
    from boundary.realtime.v1 import realtime_pb2, realtime_pb2_grpc  # noqa: E402
    return realtime_pb2, realtime_pb2_grpc


def main():
    key = os.environ.get("REALTIME_API_KEY")
    if not key:
        sys.exit("set REALTIME_API_KEY (boundary-realtime dev prints one)")
    target = os.environ.get("REALTIME_GRPC", "127.0.0.1:50051")
    user = os.environ.get("REALTIME_USER", "dev-user")
    topic = os.environ.get("REALTIME_TOPIC", "news")
    pb, pb_grpc = load_stubs()
    auth = [("authorization", f"Bearer {key}")]

    with grpc.insecure_channel(target) as channel:
        rt = pb_grpc.RealtimeServiceStub(channel)

        def message(kind, payload):
            return pb.Message(type=kind, payload_json=json.dumps(payload))

        try:
            r = rt.SendToUser(pb.SendToUserRequest(
                user_id=user, message=message("greeting", {"text": "hello from Python"})),
                metadata=auth, timeout=5)
            print(f"SendToUser {user}: queued to {r.connections} connection(s), id {r.message_id}")

            r = rt.Broadcast(pb.BroadcastRequest(
                message=message("announcement", {"text": "maintenance at 22:00", "from": "python"})),
                metadata=auth, timeout=5)
            print(f"Broadcast: queued to {r.connections} connection(s)")

            r = rt.Publish(pb.PublishRequest(
                topic=topic, message=message("headline", {"title": "Python publishes", "from": "python"})),
                metadata=auth, timeout=5)
            print(f"Publish {topic}: offset {r.offset}, epoch {r.epoch}, queued to {r.connections}")

            # Many publications in one call: one result per item, in order (an item that fails
            # answers its own code and error; the others are still published).
            items = [pb.PublishRequest(topic=topic, message=message("headline", {"n": n}))
                     for n in range(3)]
            batch = rt.PublishBatch(pb.PublishBatchRequest(items=items), metadata=auth, timeout=5)
            print("PublishBatch: offsets " + ", ".join(str(x.response.offset) for x in batch.results))

            # Or a stream of them, for as long as the backend likes: each answered in order.
            more = (pb.PublishRequest(topic=topic, message=message("headline", {"n": n}))
                    for n in range(3, 5))
            results = rt.PublishStream(more, metadata=auth, timeout=5)
            print("PublishStream: offsets " + ", ".join(str(x.response.offset) for x in results))

            page = rt.ListConnections(pb.ListConnectionsRequest(user_id=user, page_size=100),
                                      metadata=auth, timeout=5)
            for c in page.connections:
                print(f"connection {c.connection_id} user {c.user_id} topics {list(c.topics)}")
        except grpc.RpcError as e:
            # The status code and message name what was wrong (UNAUTHENTICATED, INVALID_ARGUMENT, ...).
            sys.exit(f"{e.code().name}: {e.details()}")


if __name__ == "__main__":
    main()
