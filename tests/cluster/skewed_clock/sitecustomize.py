"""Put a volunteer's wall clock off by ``CLUSTER_CLOCK_OFFSET_S`` seconds, as Python sees it.

The cluster (``hydra_cluster.py``) puts this directory first on a volunteer's ``PYTHONPATH``, so Python
imports it at start-up, before any of Hydra, Celery or kombu: ``time.time`` and ``time.time_ns`` (every
timestamp Hydra's worker signs or sends: envelopes, results, transfer nonces, grid reports) run that far
ahead or behind; monotonic clocks stay true, as they do on a machine whose clock is wrong. Not moved:
OpenSSL's own clock, which checks the server certificate's validity (libfaketime would move it, but
libfaketime 0.9.10 makes Python 3.11's ``time.sleep`` fail with EINVAL, so it cannot run a worker).
"""

import os
import time

_OFFSET_S = float(os.environ.get("CLUSTER_CLOCK_OFFSET_S", "0") or 0)

if _OFFSET_S:
    _true_time, _true_time_ns = time.time, time.time_ns
    _offset_ns = int(_OFFSET_S * 1e9)

    def _skewed_time() -> float:
        return _true_time() + _OFFSET_S

    def _skewed_time_ns() -> int:
        return _true_time_ns() + _offset_ns

    time.time = _skewed_time
    time.time_ns = _skewed_time_ns
