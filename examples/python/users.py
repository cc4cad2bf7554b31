#!/usr/bin/env python3
"""Users you can count on, from a Python backend: a notification that survives a reconnect
(SendToUser with an id: it takes its place in the user's stream, and a retry is not delivered
twice), a "who is online" panel (GetUsers), then USER_ONLINE / USER_OFFLINE as they happen
(WatchEvents).

    pip install -r examples/python/requirements.txt
    REALTIME_API_KEY=... python3 examples/python/users.py

Environment: REALTIME_GRPC (default 127.0.0.1:50051), REALTIME_API_KEY (required),
REALTIME_USER (who is notified, default dev-user), REALTIME_USERS (the panel, comma-separated,
default the notified user), REALTIME_EVENTS (stop after this many transitions; default 0:
watch until Ctrl-C).
"""
import datetime
import json
import os
import sys

import grpc

from send import load_stubs


def when(ts):
    """A Timestamp as ISO 8601 (UTC), or "never" when unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return "never"
    t = datetime.datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, datetime.timezone.utc)
    return t.isoformat(timespec="seconds")


def main():
    key = os.environ.get("REALTIME_API_KEY")
    if not key:
        sys.exit("set REALTIME_API_KEY (boundary-realtime dev prints one)")
    target = os.environ.get("REALTIME_GRPC", "127.0.0.1:50051")
    user = os.environ.get("REALTIME_USER", "dev-user")
    panel = [u for u in os.environ.get("REALTIME_USERS", user).split(",") if u]
    wanted = int(os.environ.get("REALTIME_EVENTS", "0"))
    pb, pb_grpc = load_stubs()
    auth = [("authorization", f"Bearer {key}")]

    with grpc.insecure_channel(target) as channel:
        rt = pb_grpc.RealtimeServiceStub(channel)
        try:
            # A notification with our own id: if the browser is reconnecting, it gets it when
            # it is back (it resumes its user stream); if we retry, it is not sent twice.
            note = pb.SendToUserRequest(user_id=user, message=pb.Message(
                type="order.shipped", payload_json=json.dumps({"order": 42}), id="order-42-shipped"))
            r = rt.SendToUser(note, metadata=auth, timeout=5)
            print(f"SendToUser {user}: offset {r.offset}, epoch {r.epoch}, queued to {r.connections}",
                  flush=True)
            r = rt.SendToUser(note, metadata=auth, timeout=5)
            print(f"retry: offset {r.offset}, queued to {r.connections} (not delivered again)",
                  flush=True)

            # Who is online: one answer per id, in order.
            users = rt.GetUsers(pb.GetUsersRequest(user_ids=panel), metadata=auth, timeout=5)
            for u in users.users:
                if u.online:
                    print(f"{u.user_id}: online, {u.connections} connection(s), "
                          f"since {when(u.online_since)}", flush=True)
                else:
                    print(f"{u.user_id}: offline, last seen {when(u.last_seen)}", flush=True)

            # Then the transitions, as they happen, once each (whichever node we watch).
            kinds = [pb.Event.USER_ONLINE, pb.Event.USER_OFFLINE]
            events = rt.WatchEvents(pb.WatchEventsRequest(kinds=kinds), metadata=auth)
            print("watching USER_ONLINE and USER_OFFLINE", flush=True)
            seen = 0
            for e in events:
                print(f"{pb.Event.Kind.Name(e.kind)} {e.user_id} at {when(e.at)}", flush=True)
                seen += 1
                if seen == wanted:
                    events.cancel()
                    break
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.CANCELLED:
                return
            sys.exit(f"{e.code().name}: {e.details()}")


if __name__ == "__main__":
    main()
