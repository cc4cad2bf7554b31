#!/usr/bin/env python3
"""A background job that pushes through the PostgreSQL outbox (docs/consumers.md): it marks an
order paid and writes the notification in the same transaction, so the push is sent only if
the order's change committed, and never lost if either side crashes after the commit.

    pip install -r examples/python/requirements.txt
    REALTIME_DSN=postgresql://app@127.0.0.1/app python3 examples/python/outbox_job.py

The service reads the outbox with a `[[consumers]] kind = "postgres"` entry on the same
database (it creates the realtime_outbox table when missing; so does this job, for the demo).

Environment: REALTIME_DSN (required), REALTIME_TOPIC (default orders:42), REALTIME_ORDER
(default 42).
"""
import json
import os

import psycopg

dsn = os.environ["REALTIME_DSN"]
topic = os.environ.get("REALTIME_TOPIC", "orders:42")
order = int(os.environ.get("REALTIME_ORDER", "42"))

with psycopg.connect(dsn) as conn:
    # The job's own table (for the example).
    conn.execute(
        "CREATE TABLE IF NOT EXISTS orders (id bigint PRIMARY KEY, status text NOT NULL)"
    )
    conn.execute(
        "INSERT INTO orders VALUES (%s, 'new') ON CONFLICT (id) DO UPDATE SET status = 'new'",
        (order,),
    )
    conn.commit()

    # A job that fails before it commits sends nothing.
    with conn.transaction(force_rollback=True):
        conn.execute("UPDATE orders SET status = 'cancelled' WHERE id = %s", (order,))
        conn.execute(
            "INSERT INTO realtime_outbox (method, payload) VALUES ('publish', %s)",
            (json.dumps({"topic": topic, "message": {"type": "order.cancelled",
                                                     "payload": {"id": order}}}),),
        )

    # The real one: the order's change and its notification commit together. The message id
    # makes a re-applied row (after a crash) a no-op.
    with conn.transaction():
        conn.execute("UPDATE orders SET status = 'paid' WHERE id = %s", (order,))
        conn.execute(
            "INSERT INTO realtime_outbox (method, payload) VALUES ('publish', %s)",
            (json.dumps({
                "topic": topic,
                "message": {
                    "type": "order.updated",
                    "payload": {"id": order, "status": "paid"},
                    "id": f"order-{order}-paid",
                },
            }),),
        )
print(f"order {order} paid; its notification is in the outbox")
