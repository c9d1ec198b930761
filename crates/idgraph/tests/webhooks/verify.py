"""Verifies idgraph's webhook deliveries with the standardwebhooks package from PyPI, an
implementation independent of idgraph's. Reads {"secret", "messages": [{"headers", "body"}]}
on stdin; exits non-zero if one does not verify or a tampered copy does."""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

request = json.load(sys.stdin)
webhook = Webhook(request["secret"])
for message in request["messages"]:
    payload = webhook.verify(message["body"], message["headers"])
    assert payload["type"], payload
    try:
        webhook.verify(message["body"] + " ", message["headers"])
    except WebhookVerificationError:
        pass
    else:
        sys.exit("a tampered body verified")
print("verified", len(request["messages"]))
