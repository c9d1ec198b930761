"""Sends every call kind through the official Segment Python client (segment-analytics-python),
configured as a user would point it at idgraph: write key, host, gzip on, batching on.

Usage: send.py WRITE_KEY HOST. Exits non-zero if the client reported any error."""

import sys

from segment.analytics.client import Client

errors = []
client = Client(
    write_key=sys.argv[1],
    host=sys.argv[2],
    gzip=True,
    max_retries=1,
    on_error=lambda error, batch: errors.append(repr(error)),
)
client.track(anonymous_id="py-anon-1", event="Viewed Pricing", properties={"plan": "pro"})
client.page(anonymous_id="py-anon-1", name="Pricing")
client.identify(
    "py-user-1",
    {"email": "Py.User@Example.com", "phone": "(415) 555-0199", "firstName": "Py"},
)
client.track("py-user-1", "Signed Up", {"plan": "pro"})
client.alias("py-anon-1", "py-user-1")
client.group("py-user-1", "group-1", {"name": "ACME"})
client.flush()
client.join()
if errors:
    print("client errors:", errors)
    sys.exit(1)
print("sent")
