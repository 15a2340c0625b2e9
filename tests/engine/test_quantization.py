"""Quantizers (engine/quantization.py) and their scoring (gpu/quantized.py) on random data,
against exact float search computed here with numpy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine import quantization as Q
from engine.config import apply_update, parse_create
from engine.errors import BadRequest
from gpu import quantized as qk

METRICS = ["ip", "l2", "l1"]


def exact(x: np.ndarray, q: np.ndarray, metric: str) -> np.ndarray:
    if metric == "ip":
        return q @ x.T
    if metric == "l2":
        return -np.sqrt(((q[:, None, :] - x[None]) ** 2).sum(axis=2))
    return -np.abs(q[:, None, :] - x[None]).sum(axis=2)


def rescored_topk(rec: Q.QuantizedRows, x: np.ndarray, q: np.ndarray, k: int,
                  oversampling: float, metric: str) -> np.ndarray:
    _, cand = rec.scan(q, int(np.ceil(k * oversampling)), len(x), None)
    sims = exact(x, q, metric)
    best = np.take_along_axis(sims, cand, axis=1)
    return np.take_along_axis(cand, np.argsort(-best, axis=1, kind="stable")[:, :k], axis=1)


def recall(got: np.ndarray, x: np.ndarray, q: np.ndarray, k: int, metric: str) -> float:
    want = np.argsort(-exact(x, q, metric), axis=1, kind="stable")[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, want, strict=True)]))


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("raw", [{"scalar": {"type": "int8", "quantile": 0.99}},
                                 {"scalar": {"type": "int8"}}])
def test_rescored_recall_vs_exact(raw: dict[str, Any], metric: str) -> None:
    """rescore + oversampling 2: recall@10 ≥ 0.99 against exact float search."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4000, 128)).astype(np.float32)
    q = rng.standard_normal((20, 128)).astype(np.float32)
    quantizer = Q.train(Q.parse_config(raw), x, metric)
    rec = Q.encode_rows(quantizer, x)
    assert recall(rescored_topk(rec, x, q, 10, 2.0, metric), x, q, 10, metric) >= 0.99


@pytest.mark.parametrize("metric", METRICS)
def test_product_rescored_recall(metric: str) -> None:
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    q = rng.standard_normal((10, 32)).astype(np.float32)
    pq = Q.train(Q.parse_config({"product": {"compression": "x8"}}), x, metric)
    rec = Q.encode_rows(pq, x)
    assert recall(rescored_topk(rec, x, q, 10, 4.0, metric), x, q, 10, metric) >= 0.95


@pytest.mark.parametrize("encoding", ["one_bit", "two_bits", "one_and_half_bits"])
@pytest.mark.parametrize("query_encoding", ["default", "scalar8bits"])
def test_binary_with_oversampling_recovers_recall(encoding: str, query_encoding: str) -> None:
    """Binary codes are coarse but keep near neighbours near: after rescoring, each query's
    planted neighbour is its exact best match."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 256)).astype(np.float32)
    q = (x[:10] + 0.3 * rng.standard_normal((10, 256))).astype(np.float32)
    cfg = Q.parse_config({"binary": {"encoding": encoding, "query_encoding": query_encoding}})
    rec = Q.encode_rows(Q.train(cfg, x, "ip"), x)
    assert rec.codes.shape[1] == rec.quantizer.code_bytes()
    got = rescored_topk(rec, x, q, 10, 5.0, "ip")
    assert (got[:, 0] == np.argmax(exact(x, q, "ip"), axis=1)).all()
    assert (got[:, 0] == np.arange(10)).all()


@pytest.mark.parametrize("metric", METRICS)
def test_int8_scores_are_the_decoded_vectors_scores(metric: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 16)).astype(np.float32)
    q = rng.standard_normal((4, 16)).astype(np.float32)
    sq = Q.train(Q.parse_config({"scalar": {"type": "int8"}}), x, metric)
    codes = sq.encode(x)
    got = qk.int8_scores(codes, q, sq.scale, sq.offset, metric, sq.row_norms(codes))
    np.testing.assert_allclose(got, exact(sq.decode(codes), q, metric), rtol=1e-4, atol=1e-3)


def test_binary_hamming_matches_unpacked_bits() -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (50, 9), dtype=np.uint8)
    b = rng.integers(0, 256, (3, 9), dtype=np.uint8)
    want = (np.unpackbits(b, axis=1)[:, None, :] != np.unpackbits(a, axis=1)[None]).sum(axis=2)
    np.testing.assert_array_equal(qk.hamming(a, b), want)
    lut = qk._POP8[a[None] ^ b[:, None]].sum(axis=2)  # the cupy fallback path
    np.testing.assert_array_equal(lut, want)


def test_pq_scores_are_table_sums() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2000, 16)).astype(np.float32)
    q = rng.standard_normal((3, 16)).astype(np.float32)
    pq = Q.train(Q.parse_config({"product": {"compression": "x8"}}), x, "l2")
    codes = pq.encode(x)
    decoded = np.concatenate([pq.centroids[m][codes[:, m]] for m in range(pq.m)], axis=1)
    got = qk.pq_scores(codes, qk.pq_tables(q, pq.centroids, "l2"), "l2")
    np.testing.assert_allclose(got, exact(decoded, q, "l2"), rtol=1e-4, atol=1e-3)


def test_masked_scan_never_returns_masked_rows() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3000, 8)).astype(np.float32)
    rec = Q.encode_rows(Q.train(Q.parse_config({"scalar": {"type": "int8"}}), x, "ip"), x)
    mask = rng.random(3000) < 0.1
    _, rows = rec.scan(x[:5], 50, 3000, mask)
    assert mask[rows[rows >= 0]].all()


@pytest.mark.parametrize("raw", [{"scalar": {"type": "int8", "quantile": 0.9}},
                                 {"binary": {"encoding": "two_bits"}},
                                 {"product": {"compression": "x16"}}])
def test_arrays_round_trip_without_training(raw: dict[str, Any]) -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((1000, 16)).astype(np.float32)
    cfg = Q.parse_config(raw)
    a = Q.train(cfg, x, "l2")
    before = Q.trainings()
    b = Q.from_arrays(cfg, 16, "l2", a.arrays())
    rec = Q.from_codes(b, a.encode(x))
    assert Q.trainings() == before and Q.same_codebook(a, b)
    np.testing.assert_array_equal(rec.scan(x[:3], 5, 1000, None)[1],
                                  Q.encode_rows(a, x).scan(x[:3], 5, 1000, None)[1])


def test_store_and_load(tmp_path: Any) -> None:
    x = np.random.default_rng(8).standard_normal((300, 8)).astype(np.float32)
    cfg = Q.parse_config({"product": {"compression": "x4"}})
    q = Q.train(cfg, x, "ip")
    Q.save(str(tmp_path), "v", q)
    back = Q.load(str(tmp_path), "v", cfg, 8, "ip")
    assert back is not None and Q.same_codebook(q, back)
    other = Q.parse_config({"product": {"compression": "x8"}})
    assert Q.load(str(tmp_path), "v", other, 8, "ip") is None  # another config: retrain


BAD = [
    ({"product": {"compression": "x3"}}, "compression"),
    ({"scalar": {"type": "int8", "quantile": 0.3}}, "quantile"),
    ({"scalar": {"type": "int8", "quantile": 1.5}}, "quantile"),
    ({"scalar": {"type": "int4"}}, "type"),
    ({"scalar": {"type": "int8", "bogus": 1}}, "bogus"),
    ({"binary": {"encoding": "three_bits"}}, "encoding"),
    ({"binary": {"query_encoding": "x"}}, "query_encoding"),
    ({"binary": {"always_ram": "yes"}}, "always_ram"),
    ({"turbo": {}}, "turbo"),
    ({"fancy": {}}, "fancy"),
    ("Disabled", "Disabled"),
]


@pytest.mark.parametrize(("raw", "word"), BAD)
def test_bad_configs_are_400_naming_them(raw: Any, word: str) -> None:
    body = {"vectors": {"size": 4, "distance": "Dot"}, "quantization_config": raw}
    with pytest.raises(BadRequest, match=word):
        parse_create(body)
    named = {"vectors": {"a": {"size": 4, "distance": "Dot", "quantization_config": raw}}}
    with pytest.raises(BadRequest, match=word):
        parse_create(named)


def test_multivector_quantization_is_refused() -> None:
    body = {"vectors": {"m": {"size": 4, "distance": "Dot", "quantization_config":
                              {"scalar": {"type": "int8"}},
                              "multivector_config": {"comparator": "max_sim"}}}}
    with pytest.raises(BadRequest, match="quantization"):
        parse_create(body)


def test_effective_config_per_vector_and_updates() -> None:
    cfg = parse_create({"vectors": {"a": {"size": 4, "distance": "Dot"},
                                    "b": {"size": 4, "distance": "Dot", "quantization_config":
                                          {"binary": {}}}},
                        "quantization_config": {"scalar": {"type": "int8", "always_ram": True}}})
    assert cfg.quantization["a"].kind == "scalar" and cfg.quantization["b"].kind == "binary"
    assert cfg.to_json()["quantization_config"] == {"scalar": {"type": "int8",
                                                               "always_ram": True}}
    off = apply_update(cfg, {"quantization_config": "Disabled"})
    assert "a" not in off.quantization and off.quantization["b"].kind == "binary"
    assert "quantization_config" not in off.to_json()
    own_off = apply_update(cfg, {"vectors": {"b": {"quantization_config": "Disabled"}}})
    assert own_off.quantization["b"].kind == "scalar"
    with pytest.raises(BadRequest, match="compression"):
        apply_update(cfg, {"quantization_config": {"product": {"compression": "x5"}}})
    with pytest.raises(BadRequest, match="quantile"):
        apply_update(cfg, {"vectors": {"a": {"quantization_config":
                                             {"scalar": {"type": "int8", "quantile": 2}}}}})


def test_stored_bad_config_is_dropped_not_fatal() -> None:
    from engine.config import from_state

    cfg = from_state({"vectors": {"size": 4, "distance": "Dot"},
                      "quantization_config": {"product": {"compression": "x3"}}})
    assert cfg.quantization == {}


# ---- host scans through faiss (gpu/quantized.py) against the numpy scans -----------------


def _points(vals: np.ndarray, rows: np.ndarray) -> list[Any]:
    from types import SimpleNamespace

    return [SimpleNamespace(id=int(r), score=float(v)) for v, r in zip(vals, rows, strict=True)
            if r >= 0]


_TRAINED: dict[tuple[str, str], Q.Quantizer] = {}


@pytest.mark.parametrize(("raw", "metric"), [
    ({"scalar": {"type": "int8"}}, "ip"), ({"scalar": {"type": "int8", "quantile": 0.95}}, "l2"),
    ({"binary": {}}, "ip"), ({"binary": {"encoding": "two_bits"}}, "l2"),
    ({"binary": {"encoding": "one_and_half_bits"}}, "l1"),
    ({"product": {"compression": "x16"}}, "l2"), ({"product": {"compression": "x8"}}, "ip")])
@pytest.mark.parametrize("masked", [False, True])
def test_faiss_host_scan_matches_the_numpy_scan(raw: dict[str, Any], metric: str,
                                                masked: bool) -> None:
    from tests.ranking import assert_same_ranking

    rng = np.random.default_rng(12)
    x = rng.standard_normal((12000, 48)).astype(np.float32)  # 256 PQ centroids: ≥ 9984 rows
    q = rng.standard_normal((6, 48)).astype(np.float32)
    mask = rng.random(len(x)) < 0.2 if masked else None
    key = (repr(raw), metric)
    if key not in _TRAINED:  # one training per config (PQ's 256 centroids take seconds)
        _TRAINED[key] = Q.train(Q.parse_config(raw), x, metric)
    quantizer = _TRAINED[key]
    rec = Q.encode_rows(quantizer, x)
    assert rec.index is not None  # faiss holds the codes; `codes` is a view of its bytes
    np.testing.assert_array_equal(rec.codes, quantizer.encode(x))
    got = rec.scan(q, 30, len(x), mask)
    want = quantizer.scan(np.array(rec.codes), rec.norms, q, 30, mask)  # numpy
    assert got[1].shape == want[1].shape == (6, 30)
    if mask is not None:
        assert mask[got[1][got[1] >= 0]].all()
    for gv, gr, wv, wr in zip(*got, *want, strict=True):
        assert_same_ranking(_points(gv, gr)[:-1], _points(wv, wr)[:-1], rel=1e-4, abs=1e-3)


def test_faiss_held_codes_outlive_their_rows_record() -> None:
    x = np.random.default_rng(13).standard_normal((2000, 16)).astype(np.float32)
    quantizer = Q.train(Q.parse_config({"scalar": {"type": "int8"}}), x, "ip")
    rec = Q.encode_rows(quantizer, x)
    codes = rec.codes[:100]
    del rec  # the view's base keeps the faiss index (and its bytes) alive
    import gc

    gc.collect()
    np.testing.assert_array_equal(codes, quantizer.encode(x[:100]))


# ---- codes persisted next to their segment ---------------------------------------------------


def _quantized_collection(path: Any, x: np.ndarray) -> Any:
    from api.parse.writes import apply_body
    from engine.collection import Collection

    coll = Collection.create("c", str(path), {"vectors": {"size": x.shape[1],
                                                          "distance": "Euclid"},
                                              "quantization_config": {"scalar": {"type": "int8"}}})
    apply_body(coll, "upsert", {"batch": {"ids": list(range(len(x))), "vectors": x}})
    while coll.quantize_pending():
        pass
    return coll


def test_a_restart_adopts_persisted_codes_without_encoding(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.collection import Collection

    x = np.random.default_rng(14).standard_normal((1500, 16)).astype(np.float32)
    coll = _quantized_collection(tmp_path / "c", x)
    before = coll.segments[0].quantized[""].host_codes().copy()
    coll.close()

    def no_encoding(*a: Any, **kw: Any) -> Any:
        raise AssertionError("the codes were encoded again")

    trained = Q.trainings()
    monkeypatch.setattr(Q, "encode_rows", no_encoding)
    again = Collection.load("c", str(tmp_path / "c"))
    while again.quantize_pending():
        pass
    rec = again.segments[0].quantized[""]
    assert rec.rows == 1500 and Q.trainings() == trained
    np.testing.assert_array_equal(rec.host_codes(), before)
    again.close()


@pytest.mark.parametrize("damage", ["truncate", "narrow", "other_rows"])
def test_persisted_codes_that_do_not_fit_are_encoded_again(tmp_path: Any, damage: str) -> None:
    from engine.collection import Collection
    from engine.indexing import segment_dir
    from engine.segment_store import codes_file

    x = np.random.default_rng(15).standard_normal((1500, 16)).astype(np.float32)
    coll = _quantized_collection(tmp_path / "c", x)
    seg = coll.segments[0]
    want = seg.quantized[""].host_codes().copy()
    path = f"{segment_dir(coll, seg.seg_id)}/{codes_file('')}"
    coll.close()
    if damage == "truncate":
        with open(path, "r+b") as f:
            f.truncate(100)
    else:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        if damage == "narrow":
            arrays["codes"] = arrays["codes"][:, :8]  # a wrong size
        else:
            arrays["ids_sha"] = np.zeros_like(arrays["ids_sha"])
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    again = Collection.load("c", str(tmp_path / "c"))
    while again.quantize_pending():
        pass
    rec = again.segments[0].quantized[""]
    np.testing.assert_array_equal(rec.host_codes(), want)  # re-encoded with the same quantizer
    with np.load(path) as z:  # and written back whole
        np.testing.assert_array_equal(z["codes"], want)
    again.close()
