"""Quantized scoring (gpu/quantized.py) on cupy against numpy on the same codes; `gpu`
tests are skipped without a device (tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine import quantization as Q
from gpu.xp import get_xp

METRICS = ["ip", "l2", "l1"]
CONFIGS = [{"scalar": {"type": "int8", "quantile": 0.99}}, {"binary": {}},
           {"binary": {"encoding": "two_bits", "query_encoding": "scalar8bits"}},
           {"product": {"compression": "x8"}}]


@pytest.mark.gpu
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("raw", CONFIGS)
def test_device_scan_matches_numpy(raw: dict[str, Any], metric: str) -> None:
    cp = get_xp()
    rng = np.random.default_rng(5)
    x = rng.standard_normal((20000, 64)).astype(np.float32)
    q = rng.standard_normal((8, 64)).astype(np.float32)
    mask = rng.random(len(x)) < 0.7
    quantizer = Q.train(Q.parse_config(raw), x, metric)
    host = Q.encode_rows(quantizer, x)
    dev = Q.encode_rows(quantizer, x, cp)
    assert type(dev.codes).__module__.startswith("cupy")
    hv, hr = host.scan(q, 20, len(x), mask)
    dv, dr = dev.scan(q, 20, len(x), mask)
    np.testing.assert_allclose(dv, hv, rtol=1e-3, atol=1e-2)  # float16 GEMM on the device
    assert (dr == hr).mean() > 0.9 and mask[dr[dr >= 0]].all()
