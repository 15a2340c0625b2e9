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

static PyObject *str_dot, *str_copy;

/* ranked_query(ids, versions, matrix, query, normalise, negate, k) -> ranked(ids, versions,
 * matrix.dot(q), negate, k), q being the query prepared as engine/search.py _prepared_one
 * prepares it (normalise: divided by its float32 norm), or None when the query's squared
 * norm or a score is not finite (the caller's Python steps decide, and refuse NaN).
 * matrix: (n, d) float32 numpy rows, n <= RANKED_MAX; query: (d,) float32 numpy array.
 * The same numpy calls make the same bits: q.dot(q) (BLAS sdot) for the norm, its square
 * root rounded to float32, an IEEE float32 division per element (numpy's true_divide), and
 * matrix.dot(q) (BLAS sgemv). Why: on a small collection the query's preparation, scoring
 * and ranking were ~20 of its ~26 us in the engine, nearly all of it the Python and numpy
 * calls around ~1 us of arithmetic (the server, cold caches, bench/overhead.py). */
static PyObject *ranked_query(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError,
                        "ranked_query(ids: list, versions, matrix, query, normalise, negate, k)");
        return NULL;
    }
    int normalise = PyObject_IsTrue(args[4]);
    int negate = PyObject_IsTrue(args[5]);
    Py_ssize_t k = PyLong_AsSsize_t(args[6]);
    if (normalise < 0 || negate < 0 || (k == -1 && PyErr_Occurred()))
        return NULL;
    PyObject *q = args[3];
    PyObject *sq_obj = PyObject_CallMethodOneArg(q, str_dot, q);
    if (!sq_obj)
        return NULL;
    double sq = PyFloat_AsDouble(sq_obj);
    Py_DECREF(sq_obj);
    if (sq == -1.0 && PyErr_Occurred())
        return NULL;
    if (!isfinite(sq))
        Py_RETURN_NONE;
    PyObject *prepared;
    if (normalise) {
        prepared = PyObject_CallMethodNoArgs(q, str_copy);
        if (!prepared)
            return NULL;
        float norm = (float)sqrt(sq); /* np.float32(math.sqrt(sq)) */
        if (norm != 0.0f) {           /* zero: the copy, as _prepared_one */
            Py_buffer qb;
            if (PyObject_GetBuffer(prepared, &qb,
                                   PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
                Py_DECREF(prepared);
                return NULL;
            }
            if (qb.itemsize != 4 || !kind_in(&qb, "f")) {
                PyBuffer_Release(&qb);
                Py_DECREF(prepared);
                PyErr_SetString(PyExc_ValueError, "ranked_query: query (d,) float32");
                return NULL;
            }
            float *p = qb.buf;
            for (Py_ssize_t i = 0, d = qb.len / 4; i < d; i++)
                p[i] = p[i] / norm;
            PyBuffer_Release(&qb);
        }
    } else {
        prepared = Py_NewRef(q);
    }
    PyObject *sims = PyObject_CallMethodOneArg(args[2], str_dot, prepared);
    Py_DECREF(prepared);
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
    {"ranked_query", (PyCFunction)(void (*)(void))ranked_query, METH_FASTCALL,
     "ranked_query(ids, versions, matrix, query, normalise, negate, k): ranked(...) of "
     "matrix.dot(prepared query), or None"},
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
    str_copy = PyUnicode_InternFromString("copy");
    if (!key_id || !key_version || !key_score || !str_dot || !str_copy)
        return NULL;
    return PyModule_Create(&module);
}
