/* The plain scored search record, {"id": ..., "version": ..., "score": ...}, for a whole
 * batch at once.
 *
 * Why: once the graph walk ran in C (engine/_hnsw_walk.c), building these dicts in a Python
 * comprehension was the largest cost left in a big search batch: 1.5 of a 500-query batch's
 * 12 ms (bench.ann, ef 32), while the walk's other core sat idle. Here each record is three
 * dict insertions with interned keys; the values are what `.tolist()` and the id list give
 * (the same Python ints and floats), so the records are equal to the comprehension's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

static PyObject *key_id, *key_version, *key_score;

static int get(PyObject *o, Py_buffer *b, Py_ssize_t itemsize, const char *what) {
    if (PyObject_GetBuffer(o, b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    if (b->itemsize != itemsize) {
        PyErr_Format(PyExc_ValueError, "records: %s needs %zd-byte items", what, itemsize);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

/* a buffer's item kind, past any byte-order mark: numpy exports int64 as 'l' on LP64 */
static int kind_in(const Py_buffer *b, const char *kinds) {
    const char *f = b->format;
    if (*f == '@' || *f == '=' || *f == '<')
        f++;
    return f[0] && !f[1] && strchr(kinds, f[0]) != NULL;
}

static PyObject *one(PyObject *ids, Py_ssize_t nids, const uint64_t *versions,
                     Py_ssize_t nversions, int64_t row, double score) {
    if (row < 0 || row >= nids || row >= nversions) {
        PyErr_Format(PyExc_IndexError, "records: row %lld outside the segment", (long long)row);
        return NULL;
    }
    PyObject *rec = PyDict_New();
    if (!rec)
        return NULL;
    PyObject *ver = PyLong_FromUnsignedLongLong(versions[row]);
    PyObject *sc = ver ? PyFloat_FromDouble(score) : NULL;
    if (!sc || PyDict_SetItem(rec, key_id, PyList_GET_ITEM(ids, row)) < 0 ||
        PyDict_SetItem(rec, key_version, ver) < 0 || PyDict_SetItem(rec, key_score, sc) < 0) {
        Py_XDECREF(ver);
        Py_XDECREF(sc);
        Py_DECREF(rec);
        return NULL;
    }
    Py_DECREF(ver);
    Py_DECREF(sc);
    return rec;
}

/* records(ids, versions, rows, scores) -> list of b lists of k records.
 * ids: the segment's list of point ids; versions: its uint64 versions (indexed by row);
 * rows: (b, k) int64 rows; scores: (b, k) float64 scores. */
static PyObject *records(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "records(ids: list, versions, rows, scores)");
        return NULL;
    }
    PyObject *ids = args[0];
    Py_buffer vb, rb, sb;
    if (get(args[1], &vb, 8, "versions") < 0)
        return NULL;
    if (get(args[2], &rb, 8, "rows") < 0) {
        PyBuffer_Release(&vb);
        return NULL;
    }
    if (get(args[3], &sb, 8, "scores") < 0) {
        PyBuffer_Release(&vb);
        PyBuffer_Release(&rb);
        return NULL;
    }
    PyObject *out = NULL;
    if (rb.ndim != 2 || sb.ndim != 2 || rb.shape[0] != sb.shape[0] ||
        rb.shape[1] != sb.shape[1] || !kind_in(&vb, "QL") || !kind_in(&rb, "ql") ||
        !kind_in(&sb, "d")) {
        PyErr_SetString(PyExc_ValueError,
                        "records: versions uint64, rows (b, k) int64, scores (b, k) float64");
        goto done;
    }
    Py_ssize_t b = rb.shape[0], k = rb.shape[1];
    const int64_t *rows = rb.buf;
    const double *scores = sb.buf;
    const uint64_t *versions = vb.buf;
    Py_ssize_t nversions = vb.len / 8;
    out = PyList_New(b);
    if (!out)
        goto done;
    for (Py_ssize_t i = 0; i < b; i++) {
        PyObject *row = PyList_New(k);
        if (!row) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, row);
        for (Py_ssize_t j = 0; j < k; j++) {
            /* the id list can only grow (appends under the GIL): read its size each time */
            PyObject *rec = one(ids, PyList_GET_SIZE(ids), versions, nversions,
                                rows[i * k + j], scores[i * k + j]);
            if (!rec) {
                Py_CLEAR(out);
                goto done;
            }
            PyList_SET_ITEM(row, j, rec);
        }
    }
done:
    PyBuffer_Release(&vb);
    PyBuffer_Release(&rb);
    PyBuffer_Release(&sb);
    return out;
}

/* ranked(ids, versions, sims, negate, k) -> the first min(k, n) records of all n rows of a
 * segment, best first, or None when a score is not finite (the caller's numpy steps decide).
 * sims: (n,) float32 similarities, higher is better; negate: Qdrant's score is -sims (Euclid).
 * The order is numpy's stable argsort of -sims (descending, ties by row), the selection
 * gpu.topk.topk_one makes when k >= n; the scores are the doubles `.tolist()` gives. One call
 * instead of a dozen numpy ones: a query on a small collection spent ~45 us of its ~60 in
 * the engine's per-call costs (the server, cold caches), not in the scan. n <= RANKED_MAX:
 * an insertion sort. */
#define RANKED_MAX 256
/* The first min(k, n) records of rows 0..n-1 ranked by `sims` (see ranked), a new list; or
 * a new reference to None when a score is not finite. */
static PyObject *rank(PyObject *ids, const Py_buffer *vb, const float *sims, Py_ssize_t n,
                      int negate, Py_ssize_t k) {
    int64_t order[RANKED_MAX];
    for (Py_ssize_t i = 0; i < n; i++) {
        float v = sims[i];
        if (!isfinite(v))
            Py_RETURN_NONE;
        Py_ssize_t j = i; /* stable: a row moves only past strictly lower scores */
        while (j > 0 && sims[order[j - 1]] < v) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = i;
    }
    Py_ssize_t m = k < n ? (k > 0 ? k : 0) : n;
    PyObject *out = PyList_New(m);
    if (!out)
        return NULL;
    for (Py_ssize_t j = 0; j < m; j++) {
        double sc = (double)sims[order[j]];
        PyObject *rec = one(ids, PyList_GET_SIZE(ids), vb->buf, vb->len / 8, order[j],
                            negate ? -sc : sc);
        if (!rec) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, j, rec);
    }
    return out;
}

/* ranked with the sims' buffer checked: versions uint64, sims (n <= RANKED_MAX,) float32 */
static PyObject *rank_buffers(PyObject *ids, PyObject *versions, PyObject *sims, int negate,
                              Py_ssize_t k) {
    Py_buffer vb, sb;
    if (get(versions, &vb, 8, "versions") < 0)
        return NULL;
    if (get(sims, &sb, 4, "sims") < 0) {
        PyBuffer_Release(&vb);
        return NULL;
    }
    PyObject *out = NULL;
    if (sb.ndim != 1 || !kind_in(&vb, "QL") || !kind_in(&sb, "f") || sb.shape[0] > RANKED_MAX)
        PyErr_SetString(PyExc_ValueError, "ranked: versions uint64, sims (n <= 256,) float32");
    else
        out = rank(ids, &vb, sb.buf, sb.shape[0], negate, k);
    PyBuffer_Release(&vb);
    PyBuffer_Release(&sb);
    return out;
}

static PyObject *ranked(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "ranked(ids: list, versions, sims, negate, k)");
        return NULL;
    }
    int negate = PyObject_IsTrue(args[3]);
    Py_ssize_t k = PyLong_AsSsize_t(args[4]);
    if (negate < 0 || (k == -1 && PyErr_Occurred()))
        return NULL;
    return rank_buffers(args[0], args[1], args[2], negate, k);
}

/* hits(ids, versions, rows, sims, negate, offset) -> the records of one query's index search,
 * from the `offset`-th kept one on: (k,) int64 rows and float32 similarities, best first;
 * a missing hit (row < 0) or a score that is not finite (an overflowed product) is not kept,
 * as the batch path drops them; score = sims (Qdrant's -sims for Euclid) as a double. What
 * engine/search.py _search_one's numpy steps give (a mask, a slice, astype, plain_records),
 * in one call: after the walk has filled the caches with vectors, each of those steps ran
 * cold (~8 us of a ~45 us query at ef 16: bench.ann, timed in place). */
static PyObject *hits(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "hits(ids: list, versions, rows, sims, negate, offset)");
        return NULL;
    }
    int negate = PyObject_IsTrue(args[4]);
    Py_ssize_t offset = PyLong_AsSsize_t(args[5]);
    if (negate < 0 || (offset == -1 && PyErr_Occurred()))
        return NULL;
    PyObject *ids = args[0];
    Py_buffer vb, rb, sb;
    if (get(args[1], &vb, 8, "versions") < 0)
        return NULL;
    if (get(args[2], &rb, 8, "rows") < 0) {
        PyBuffer_Release(&vb);
        return NULL;
    }
    if (get(args[3], &sb, 4, "sims") < 0) {
        PyBuffer_Release(&vb);
        PyBuffer_Release(&rb);
        return NULL;
    }
    PyObject *out = NULL;
    if (rb.ndim != 1 || sb.ndim != 1 || rb.shape[0] != sb.shape[0] || !kind_in(&vb, "QL") ||
        !kind_in(&rb, "ql") || !kind_in(&sb, "f")) {
        PyErr_SetString(PyExc_ValueError,
                        "hits: versions uint64, rows (k,) int64, sims (k,) float32");
        goto done;
    }
    const int64_t *rows = rb.buf;
    const float *sims = sb.buf;
    Py_ssize_t n = rb.shape[0], kept = 0, skip = offset < 0 ? 0 : offset, at = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        kept += rows[i] >= 0 && isfinite(sims[i]);
    out = PyList_New(skip < kept ? kept - skip : 0);
    if (!out)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (rows[i] < 0 || !isfinite(sims[i]) || skip-- > 0)
            continue;
        double sc = (double)sims[i];
        PyObject *rec = one(ids, PyList_GET_SIZE(ids), vb.buf, vb.len / 8, rows[i],
                            negate ? -sc : sc);
        if (!rec) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, at++, rec);
    }
done:
    PyBuffer_Release(&vb);
    PyBuffer_Release(&rb);
    PyBuffer_Release(&sb);
    return out;
}

static PyObject *str_dot;

/* ranked_query(ids, versions, matrix, query, negate, k) -> ranked(ids, versions,
 * matrix.dot(query), negate, k). matrix: (n, d) float32 numpy rows, n <= RANKED_MAX; query:
 * (d,) float32, prepared (engine/search.py _prepared_one). The product is numpy's (BLAS
 * sgemv): the bits `_exact_one` gets. Why: on a small collection the scoring and ranking
 * around ~1 us of arithmetic were most of the engine's time (the server, cold caches,
 * bench/overhead.py); this is one call where the Python steps made a dozen. */
static PyObject *ranked_query(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 6 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError,
                        "ranked_query(ids: list, versions, matrix, query, negate, k)");
        return NULL;
    }
    int negate = PyObject_IsTrue(args[4]);
    Py_ssize_t k = PyLong_AsSsize_t(args[5]);
    if (negate < 0 || (k == -1 && PyErr_Occurred()))
        return NULL;
    PyObject *sims = PyObject_CallMethodOneArg(args[2], str_dot, args[3]);
    if (!sims)
        return NULL;
    PyObject *out = rank_buffers(args[0], args[1], sims, negate, k);
    Py_DECREF(sims);
    return out;
}

static PyMethodDef methods[] = {
    {"records", (PyCFunction)(void (*)(void))records, METH_FASTCALL,
     "records(ids, versions, rows, scores): [[{'id', 'version', 'score'}, ...], ...]"},
    {"ranked", (PyCFunction)(void (*)(void))ranked, METH_FASTCALL,
     "ranked(ids, versions, sims, negate, k): [{'id', 'version', 'score'}, ...] or None"},
    {"hits", (PyCFunction)(void (*)(void))hits, METH_FASTCALL,
     "hits(ids, versions, rows, sims, negate, offset): one walk's records"},
    {"ranked_query", (PyCFunction)(void (*)(void))ranked_query, METH_FASTCALL,
     "ranked_query(ids, versions, matrix, query, negate, k): ranked(...) of matrix.dot(query)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_records", "Plain scored search records (engine/render.py)", -1,
    methods,
};

PyMODINIT_FUNC PyInit__records(void) {
    key_id = PyUnicode_InternFromString("id");
    key_version = PyUnicode_InternFromString("version");
    key_score = PyUnicode_InternFromString("score");
    str_dot = PyUnicode_InternFromString("dot");
    if (!key_id || !key_version || !key_score || !str_dot)
        return NULL;
    return PyModule_Create(&module);
}
