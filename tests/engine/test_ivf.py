"""engine/ivf.py on faiss-cpu: the same code path the GPU build runs (IVF-Flat, IVF-PQ),
compared with exact numpy search on random data; serialisation, hostile blobs, settings."""

from __future__ import annotations

import numpy as np
import pytest

from api.settings import SettingsError, load_settings
from engine import ivf
from gpu.config import GpuConfig

pytestmark = pytest.mark.skipif(ivf.faiss is None, reason="faiss is not installed")


def _exact(x: np.ndarray, q: np.ndarray, metric: str, mask: np.ndarray | None = None
           ) -> np.ndarray:
    sims = q @ x.T if metric == "ip" else -np.sqrt(((q[:, None, :] - x[None]) ** 2).sum(-1))
    if mask is not None:
        sims = np.where(mask[None, :], sims, -np.inf)
    return sims


def _recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(g[g >= 0]) & set(w)) / len(w) for g, w in zip(got, want,
                                                                               strict=True)]))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    centers = rng.standard_normal((20, 16)).astype(np.float32) * 3
    x = centers[rng.integers(0, 20, 3000)] + rng.standard_normal((3000, 16)).astype(np.float32)
    q = centers[rng.integers(0, 20, 30)] + rng.standard_normal((30, 16)).astype(np.float32)
    return x.astype(np.float32), q.astype(np.float32)


@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_pq"])
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_recall_and_scores_match_exact_search(data, kind: str, metric: str) -> None:
    x, q = data
    index = ivf.IvfIndex.build(x, metric, ivf.IvfSpec(kind, nprobe=16))
    assert index.rows == len(x) and index.kind == kind and not index.on_gpu
    sims, rows = index.search(q, 10, 64, None)
    exact = _exact(x, q, metric)
    want = np.argsort(-exact, axis=1, kind="stable")[:, :10]
    assert _recall(rows, want) >= 0.9
    # scores are exact (IVF-PQ's candidates are re-scored) and sorted, higher first
    np.testing.assert_allclose(sims, np.take_along_axis(exact, rows, 1), rtol=1e-4, atol=1e-3)
    assert (np.diff(sims, axis=1) <= 1e-6).all()


@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_pq"])
def test_mask_keeps_only_allowed_rows(data, kind: str) -> None:
    x, q = data
    index = ivf.IvfIndex.build(x, "l2", ivf.IvfSpec(kind, nprobe=16))
    mask = np.random.default_rng(1).random(len(x)) < 0.2
    sims, rows = index.search(q, 10, 64, mask)
    assert mask[rows[rows >= 0]].all()
    want = np.argsort(-_exact(x, q, "l2", mask), axis=1, kind="stable")[:, :10]
    assert _recall(rows, want) >= 0.85
    # nothing allowed: every slot is a miss (-inf, -1), as the exact path pads
    sims, rows = index.search(q, 5, 64, np.zeros(len(x), bool))
    assert (rows == -1).all() and np.isneginf(sims).all()


def test_fewer_rows_than_k_pads(data) -> None:
    x, q = data
    index = ivf.IvfIndex.build(x[:50], "ip", ivf.IvfSpec("ivf_flat", nprobe=64))
    sims, rows = index.search(q[:2], 80, 64, None)
    assert sims.shape == rows.shape == (2, 50)
    assert sorted(rows[0].tolist()) == list(range(50))


def test_extension_adds_rows_without_retraining(data) -> None:
    x, q = data
    spec = ivf.IvfSpec("ivf_flat", nprobe=64)
    base = ivf.IvfIndex.build(x[:2000], "l2", spec)
    before = ivf.trainings()
    grown = ivf.IvfIndex.build(x, "l2", spec, base=base)
    assert ivf.trainings() == before and grown.rows == len(x) and base.rows == 2000
    assert grown.nlist == base.nlist
    _, rows = grown.search(q, 5, 64, None)
    want = np.argsort(-_exact(x, q, "l2"), axis=1, kind="stable")[:, :5]
    assert _recall(rows, want) >= 0.95
    # doubled past its training: trained anew
    ivf.IvfIndex.build(np.concatenate([x, x, x]), "l2", spec, base=grown)
    assert ivf.trainings() == before + 1


@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_pq"])
def test_serialised_form_round_trips_without_training(data, kind: str) -> None:
    x, q = data
    spec = ivf.IvfSpec(kind, nprobe=16)
    index = ivf.IvfIndex.build(x, "ip", spec)
    blob = index.blob()
    assert blob.dtype == np.uint8 and blob.ndim == 1
    before = ivf.trainings()
    back = ivf.IvfIndex.from_blob(blob, x, "ip", spec)
    assert ivf.trainings() == before
    assert (back.kind, back.rows, back.nlist) == (kind, index.rows, index.nlist)
    s1, r1 = index.search(q, 10, 64, None)
    s2, r2 = back.search(q, 10, 64, None)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_allclose(s1, s2)


def test_hostile_or_mismatched_blobs_are_refused(data) -> None:
    x, _ = data
    spec = ivf.IvfSpec("ivf_flat")
    blob = ivf.IvfIndex.build(x, "l2", spec).blob()
    bad = [np.zeros(0, np.uint8), np.zeros(64, np.uint8), blob[: len(blob) // 2].copy(),
           np.frombuffer(b"IwFl" + bytes(300), np.uint8).copy()]
    for b in bad:
        with pytest.raises(ivf.IvfError):
            ivf.IvfIndex.from_blob(b, x, "l2", spec)
    with pytest.raises(ivf.IvfError, match="dimension"):
        ivf.IvfIndex.from_blob(blob, np.zeros((len(x), 8), np.float32), "l2", spec)
    with pytest.raises(ivf.IvfError, match="metric"):
        ivf.IvfIndex.from_blob(blob, x, "ip", spec)
    with pytest.raises(ivf.IvfError, match="rows"):
        ivf.IvfIndex.from_blob(blob, x[:100], "l2", spec)
    with pytest.raises(ivf.IvfError):
        ivf.IvfIndex.from_blob(blob.astype(np.int16), x, "l2", spec)
    # a well-formed index whose lists point at rows that are not there
    flat = ivf.faiss.IndexFlatL2(16)
    other = ivf.faiss.IndexIVFFlat(flat, 16, 4)
    other.train(x[:400])
    other.add_with_ids(x[:10], np.arange(10, dtype=np.int64) + 10_000)
    forged = np.asarray(ivf.faiss.serialize_index(other), np.uint8)
    with pytest.raises(ivf.IvfError, match="ids"):
        ivf.IvfIndex.from_blob(forged, x, "l2", spec)
    # HNSW (or any other faiss type) is not an IVF blob
    hnsw = np.asarray(ivf.faiss.serialize_index(ivf.faiss.IndexHNSWFlat(16, 8)), np.uint8)
    with pytest.raises(ivf.IvfError):
        ivf.IvfIndex.from_blob(hnsw, x, "l2", spec)


@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_pq"])
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_archive_arrays_rebuild_without_training(data, kind: str, metric: str) -> None:
    x, q = data
    spec = ivf.IvfSpec(kind, nprobe=16)
    index = ivf.IvfIndex.build(x, metric, spec)
    arrays = index.arrays()
    assert set(arrays) == ({"meta", "coarse", "pq"} if kind == "ivf_pq" else {"meta", "coarse"})
    assert arrays["coarse"].dtype == np.float32 and arrays["coarse"].shape == (index.nlist, 16)
    before = ivf.trainings()
    back = ivf.IvfIndex.from_arrays(arrays, x, metric, spec)
    assert ivf.trainings() == before
    assert (back.kind, back.rows, back.nlist) == (kind, index.rows, index.nlist)
    mask = np.random.default_rng(2).random(len(x)) < 0.05
    for m in (None, mask):
        s1, r1 = index.search(q, 10, 64, m)
        s2, r2 = back.search(q, 10, 64, m)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_allclose(s1, s2)


def test_hostile_archive_arrays_are_refused(data) -> None:
    x, _ = data
    spec = ivf.IvfSpec("ivf_pq")
    good = ivf.IvfIndex.build(x, "l2", spec).arrays()
    meta, coarse, pq = good["meta"], good["coarse"], good["pq"]

    def with_(**parts: np.ndarray) -> dict[str, np.ndarray]:
        return {**good, **parts}

    def meta_(i: int, v: int) -> np.ndarray:
        out = meta.copy()
        out[i] = v
        return out

    nan = coarse.copy()
    nan[1, 2] = np.inf
    bad_pq = pq.copy()
    bad_pq[0, 0, 0] = np.nan
    bad = {
        "no meta": {k: v for k, v in good.items() if k != "meta"},
        "meta dtype": with_(meta=meta.astype(np.int32)),
        "meta shape": with_(meta=meta[:4]),
        "kind": with_(meta=meta_(0, 9)),
        "huge nlist": with_(meta=meta_(1, 1 << 40)),
        "zero nlist": with_(meta=meta_(1, 0)),
        "rows past the segment": with_(meta=meta_(2, len(x) + 1)),
        "pq m": with_(meta=meta_(3, 5)),
        "pq nbits": with_(meta=meta_(4, 30)),
        "no coarse": {k: v for k, v in good.items() if k != "coarse"},
        "coarse dtype": with_(coarse=coarse.astype(np.float64)),
        "coarse shape": with_(coarse=coarse[:-1]),
        "coarse inf": with_(coarse=nan),
        "a faiss blob": with_(coarse=ivf.IvfIndex.build(x, "l2", spec).blob()),
        "no pq": {k: v for k, v in good.items() if k != "pq"},
        "pq shape": with_(pq=pq[:, :-1]),
        "pq nan": with_(pq=bad_pq),
        "flat with pq parts": with_(meta=meta_(0, 0)),
    }
    for label, arrays in bad.items():
        with pytest.raises(ivf.IvfError):
            ivf.IvfIndex.from_arrays(arrays, x, "l2", spec)
            pytest.fail(label)
    with pytest.raises(ivf.IvfError, match="rows"):
        ivf.IvfIndex.from_arrays(good, x[:100], "l2", spec)
    with pytest.raises(ivf.IvfError):
        ivf.IvfIndex.from_arrays(good, np.zeros((len(x), 8), np.float32), "l2", spec)
    with pytest.raises(ivf.IvfError, match="metric"):
        ivf.IvfIndex.from_arrays(good, x, "l1", spec)


def test_gpu_filter_overfetch_shortfall_falls_back_to_the_host(data, monkeypatch) -> None:
    """A GPU index over-fetches at most GPU_MAX_K before filtering; when a selective filter
    leaves too few hits, the host form (IDSelectorBitmap) answers. Emulated on faiss-cpu."""
    x, q = data
    index = ivf.IvfIndex.build(x, "l2", ivf.IvfSpec("ivf_flat", nprobe=64))
    mask = np.zeros(len(x), bool)
    mask[np.random.default_rng(4).choice(len(x), 40, replace=False)] = True
    want = np.argsort(-_exact(x, q, "l2", mask), axis=1, kind="stable")[:, :10]
    monkeypatch.setattr(ivf, "GPU_MAX_K", 16)  # the cap bites: 16 of 3000 rows fetched
    gpu = ivf.IvfIndex(index.index, index.rows, "l2", "ivf_flat", 64, index.nlist, True,
                       index.source, index.rows)
    monkeypatch.setattr(ivf.faiss, "index_gpu_to_cpu", lambda i: i, raising=False)
    monkeypatch.setattr(ivf.IvfIndex, "_gpu_params",
                        lambda self, ef, k: ivf.IvfIndex._cpu_params(self, ef, 1.0))
    _, over = gpu._gpu_search(q, 10, 64, mask, float(mask.mean()))
    assert ivf._short(over, 10)  # the capped over-fetch alone falls short
    sims, rows = gpu.search(q, 10, 64, mask)
    assert (rows >= 0).all() and mask[rows].all()
    assert _recall(rows, want) >= 0.95


def test_manhattan_is_not_served() -> None:
    assert not ivf.supports(ivf.IvfSpec("ivf_flat"), "l1")
    assert ivf.supports(ivf.IvfSpec("ivf_flat"), "ip") and not ivf.supports(None, "ip")


def test_auto_sizes() -> None:
    assert ivf.auto_nlist(10_000) == 256 and ivf.auto_nlist(10) == 1
    assert ivf.auto_nlist(1_000_000) == 4000
    assert ivf.auto_pq_m(128) == 32 and 16 % ivf.auto_pq_m(16) == 0 and ivf.auto_pq_m(3) == 1


def test_settings_validate_and_reach_the_gpu_config(tmp_path) -> None:
    s = load_settings(env={"QUIVER__GPU__FAISS_INDEX": "IVF_PQ", "QUIVER__GPU__NPROBE": "8",
                           "QUIVER__GPU__NLIST": "100", "QUIVER__GPU__PQ_M": "4"})
    cfg = GpuConfig.from_settings(s.gpu)
    assert (cfg.faiss_index, cfg.nprobe, cfg.nlist, cfg.pq_m) == ("ivf_pq", 8, 100, 4)
    assert load_settings(env={}).gpu.faiss_index == "none"
    with pytest.raises(SettingsError, match=r"^gpu\.faiss_index: expected one of"):
        load_settings(env={"QUIVER__GPU__FAISS_INDEX": "hnsw"})
    with pytest.raises(SettingsError, match=r"^gpu\.nprobe"):
        load_settings(env={"QUIVER__GPU__NPROBE": "0"})
    if ivf.faiss_gpus() == 0:
        with pytest.raises(SettingsError, match=r"^gpu\.faiss_index: cagra needs a FAISS build"):
            load_settings(env={"QUIVER__GPU__FAISS_INDEX": "cagra"})
    with pytest.raises(SettingsError, match="cagra"):
        load_settings(env={"QUIVER__GPU__FAISS_INDEX": "cagra", "QUIVER__GPU__ENABLED": "false"})


def test_configured_follows_the_default_device(monkeypatch) -> None:
    from gpu import device

    dev = device.Device(GpuConfig(enabled="false", faiss_index="ivf_flat", nprobe=5))
    monkeypatch.setattr(device, "_default", dev)
    spec = ivf.configured()
    assert spec is not None and (spec.kind, spec.nprobe, spec.gpu) == ("ivf_flat", 5, False)
    monkeypatch.setattr(device, "_default", device.Device(GpuConfig(faiss_index="cagra",
                                                                    enabled="false")))
    assert ivf.configured() is None  # CAGRA needs a faiss GPU: HNSW as ever
    monkeypatch.setattr(device, "_default", device.Device(GpuConfig(enabled="false")))
    assert ivf.configured() is None


def test_damaged_local_ivf_file_reads_as_value_error(tmp_path) -> None:
    """engine.indexing._attach_ivf catches ValueError and rebuilds in the background."""
    from engine.segment_store import ivf_file, read_ivf

    (tmp_path / ivf_file("v")).write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="unreadable IVF file"):
        read_ivf(str(tmp_path), "v")
    (tmp_path / ivf_file("v")).write_bytes(b"")
    with pytest.raises(ValueError):
        read_ivf(str(tmp_path), "v")
