"""The OpenMP runtime's wait policy, set before torch loads it.

torch's CPU ops run on OpenMP threads (libgomp in the PyPI wheels), which after each parallel
operation spin for up to ``GOMP_SPINCOUNT`` iterations (300 000 by default, about 3 ms here)
before they sleep. A training step alternates torch's ops with the fused Rust pass
(:mod:`jtm_rs.fused_mlp`), whose rayon threads then share the cores with spinning OpenMP
threads: on 2 cores that made the fused step 0.84x torch's instead of 1.1x
(``benches/train_throughput.py --fused-vs-torch``, docs/scale.md). A short spin keeps both.

libgomp reads the variable once, when it is loaded: this works only if ``jtm_rs`` is imported
before ``torch`` (as ``jtm-rs`` does), and never overrides a value the user set.
"""

from __future__ import annotations

import os
import sys

#: The spin count set when the user set none: ~0.1 ms, enough for torch's back-to-back ops.
GOMP_SPINCOUNT = "10000"


def shorten_openmp_spin() -> bool:
    """Sets ``GOMP_SPINCOUNT`` unless it is set or torch is already loaded; whether it did."""
    if "torch" in sys.modules or "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["GOMP_SPINCOUNT"] = GOMP_SPINCOUNT
    return True
