"""A volunteer sending token transfers to the webapp the way a careful client does, run on its host.

``python transfer_client.py URL CA KEYFILE RECIPIENT COUNT AMOUNT_MICRO``: sends COUNT signed transfers
of AMOUNT_MICRO micro-tokens to RECIPIENT, one after another, each with its own nonce; a transfer whose
request fails (connection refused or reset, a timeout, a 5xx, a 429) is sent again, the same signed
body, until the webapp answers 200. Prints one JSON line: ``{"sent", "repeated", "retries", "errors"}``
(``repeated``: answers saying the ledger already held that transfer, i.e. an earlier attempt had been
applied although its answer was lost).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import requests

from hydra_tasks.ledger import book
from hydra_tasks.trust import identity


def main(argv: list[str]) -> int:
    url, ca, key_file, recipient, count, amount = argv[0], argv[1], argv[2], argv[3], int(argv[4]), int(argv[5])
    key = identity.load_key(Path(key_file))
    out = {"sent": 0, "repeated": 0, "retries": 0, "errors": []}
    base = identity.new_nonce()
    for i in range(count):
        body = book.signed_transfer(key, recipient, amount, nonce=base + i)
        deadline = time.monotonic() + 120
        while True:
            try:
                response = requests.post(url.rstrip("/") + "/api/transfer_tokens", json=body, timeout=5, verify=ca)
                if response.status_code == 200 or response.status_code == 201:
                    out["repeated"] += bool(response.json().get("repeated"))
                    break
                if response.status_code < 500 and response.status_code != 429:
                    out["errors"].append(f"{response.status_code}: {response.text[:200]}")
                    break
                problem = f"{response.status_code}"
            except requests.RequestException as exc:
                problem = type(exc).__name__
            if time.monotonic() > deadline:
                out["errors"].append(f"gave up: {problem}")
                break
            out["retries"] += 1
            time.sleep(0.2)
        out["sent"] += 1
        time.sleep(0.05)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
