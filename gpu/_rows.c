/* Inner products of one query with some rows of a host matrix, read in place; and one
 * query, or a batch of them, prepared for search (`unit` and `units`, below).
 *
 * Why: a selective filtered query scores the few hundred or thousand rows its payload index
 * lists. numpy gathers them first (`take`: a copy of every row, then a GEMV reading it back);
 * at 1000 random rows of 128 floats the gather was 67 of the query's 166 us, bound by memory
 * latency (bench filtered, cProfile). Here each row is read once where it lies, the rows a
 * few places ahead already prefetched, so their misses overlap.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define AHEAD 8          /* rows prefetched ahead of the one being scored */
#define PREFETCH_LINES 8 /* of each: the hardware prefetcher streams the rest of a long row */

__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) static void
dots_of(const float *x, Py_ssize_t d, const int64_t *rows, Py_ssize_t m, const float *q,
        float *out) {
    for (Py_ssize_t i = 0; i < m; i++) {
        if (i + AHEAD < m) {
            const char *p = (const char *)(x + rows[i + AHEAD] * d);
            for (Py_ssize_t o = 0; o < d * 4 && o < PREFETCH_LINES * 64; o += 64)
                __builtin_prefetch(p + o);
        }
        const float *a = x + rows[i] * d;
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (Py_ssize_t j = 0; j < d; j++)
            s += q[j] * a[j];
        out[i] = s;
    }
}

/* A buffer's item kind is one of `kinds`, past any byte-order mark (numpy exports int64 as
 * 'l' on LP64). */
static int kind_in(const Py_buffer *b, const char *kinds) {
    const char *f = b->format;
    if (*f == '@' || *f == '=' || *f == '<')
        f++;
    return f[0] && !f[1] && strchr(kinds, f[0]) != NULL;
}

/* dots(matrix, rows, query, out): out[i] = <query, matrix[rows[i]]>.
 * matrix: (n, d) float32, C order; rows: (m,) int64, each in [0, n); query: (d,) float32;
 * out: (m,) float32, written. The GIL is released while scoring. */
static PyObject *dots(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "dots(matrix, rows, query, out)");
        return NULL;
    }
    Py_buffer xb, rb, qb, ob;
    int have = 0;
    PyObject *result = NULL;
    if (PyObject_GetBuffer(args[0], &xb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        goto done;
    have = 1;
    if (PyObject_GetBuffer(args[1], &rb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        goto done;
    have = 2;
    if (PyObject_GetBuffer(args[2], &qb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        goto done;
    have = 3;
    if (PyObject_GetBuffer(args[3], &ob, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        goto done;
    have = 4;
    if (xb.ndim != 2 || xb.itemsize != 4 || qb.itemsize != 4 || ob.itemsize != 4 ||
        rb.itemsize != 8 || xb.shape[1] != qb.len / 4 || ob.len / 4 != rb.len / 8 ||
        !kind_in(&xb, "f") || !kind_in(&qb, "f") || !kind_in(&ob, "f") || !kind_in(&rb, "ql")) {
        PyErr_SetString(PyExc_ValueError,
                        "dots: matrix (n, d) float32, rows (m,) int64, query (d,) float32, "
                        "out (m,) float32");
        goto done;
    }
    Py_ssize_t n = xb.shape[0], d = xb.shape[1], m = rb.len / 8;
    const int64_t *rows = rb.buf;
    for (Py_ssize_t i = 0; i < m; i++) {
        if (rows[i] < 0 || rows[i] >= n) {
            PyErr_Format(PyExc_IndexError, "dots: row %lld outside the matrix's %zd",
                         (long long)rows[i], n);
            goto done;
        }
    }
    Py_BEGIN_ALLOW_THREADS
    dots_of(xb.buf, d, rows, m, qb.buf, ob.buf);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    if (have >= 4)
        PyBuffer_Release(&ob);
    if (have >= 3)
        PyBuffer_Release(&qb);
    if (have >= 2)
        PyBuffer_Release(&rb);
    if (have >= 1)
        PyBuffer_Release(&xb);
    return result;
}

static PyObject *str_copy;

/* A row's sum of squares in double, summed in order (no reassociation without -ffast-math):
 * `unit` and `units` share it, so a query has the same bits alone or in a batch. */
static double sum_squares(const float *q, Py_ssize_t d) {
    double sq = 0.0;
    for (Py_ssize_t i = 0; i < d; i++)
        sq += (double)q[i] * (double)q[i];
    return sq;
}

/* unit(query, normalise) -> the query as searched, or None when it holds NaN or an infinity.
 * query: (d,) float32 numpy array, C order. normalise (Cosine): a copy divided by its L2
 * norm (float32, from a double sum of squares: exact to the float32 rounding, whatever the
 * BLAS; a zero vector's copy as it is); otherwise the query itself. Every single-query path
 * prepares its query here (engine/search.py _prepared_one): numpy's dot, scalar and divide
 * calls around this ~100 ns of arithmetic cost ~3-4 us with the server's cold caches. */
static PyObject *unit(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "unit(query, normalise)");
        return NULL;
    }
    int normalise = PyObject_IsTrue(args[1]);
    if (normalise < 0)
        return NULL;
    Py_buffer qb;
    if (PyObject_GetBuffer(args[0], &qb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return NULL;
    if (qb.itemsize != 4 || !kind_in(&qb, "f")) {
        PyBuffer_Release(&qb);
        PyErr_SetString(PyExc_ValueError, "unit: query (d,) float32");
        return NULL;
    }
    double sq = sum_squares(qb.buf, qb.len / 4);
    Py_ssize_t d = qb.len / 4;
    PyBuffer_Release(&qb);
    if (!isfinite(sq)) /* only a NaN or infinite component: float32 squares cannot overflow */
        Py_RETURN_NONE;
    if (!normalise)
        return Py_NewRef(args[0]);
    PyObject *out = PyObject_CallMethodNoArgs(args[0], str_copy);
    float norm = (float)sqrt(sq); /* an overflow gives inf: zeros, as numpy's division */
    if (!out || norm == 0.0f)
        return out;
    Py_buffer ob;
    if (PyObject_GetBuffer(out, &ob, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    float *p = ob.buf;
    for (Py_ssize_t i = 0; i < d && i < ob.len / 4; i++)
        p[i] = p[i] / norm;
    PyBuffer_Release(&ob);
    return out;
}

/* Up to four rows src[0..r) of d floats prepared into dst[0..r) (dst NULL: only checked):
 * `unit`'s steps for each. Four rows at once make four independent chains of additions,
 * each in sum_squares's order (so the same bits): one row's chain of dependent additions
 * is what bounds it. 0 when a row holds NaN or an infinity. */
static int prepare_rows(const float *const *src, float *const *dst, int r, Py_ssize_t d) {
    double sq[4] = {0.0, 0.0, 0.0, 0.0};
    if (r == 4) {
        const float *a = src[0], *b = src[1], *c = src[2], *e = src[3];
        for (Py_ssize_t i = 0; i < d; i++) {
            sq[0] += (double)a[i] * (double)a[i];
            sq[1] += (double)b[i] * (double)b[i];
            sq[2] += (double)c[i] * (double)c[i];
            sq[3] += (double)e[i] * (double)e[i];
        }
    } else {
        for (int j = 0; j < r; j++)
            sq[j] = sum_squares(src[j], d);
    }
    for (int j = 0; j < r; j++) {
        if (!isfinite(sq[j]))
            return 0;
        if (!dst)
            continue;
        float norm = (float)sqrt(sq[j]); /* as `unit`: an overflow gives inf, so zeros */
        if (norm == 0.0f)
            memcpy(dst[j], src[j], (size_t)d * 4);
        else
            for (Py_ssize_t i = 0; i < d; i++)
                dst[j][i] = src[j][i] / norm;
    }
    return 1;
}

/* units(queries, out) -> False when a row holds NaN or an infinity, else True.
 * queries: (b, d) float32, C order. out: None (only the check: Dot, Euclid) or a writable
 * (b, d) float32 array that receives each row as `unit` prepares it (the same steps, so
 * the same bits). */
static PyObject *units(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "units(queries, out)");
        return NULL;
    }
    Py_buffer qb, ob;
    if (PyObject_GetBuffer(args[0], &qb, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return NULL;
    if (qb.itemsize != 4 || !kind_in(&qb, "f") || qb.ndim != 2) {
        PyBuffer_Release(&qb);
        PyErr_SetString(PyExc_ValueError, "units: queries (b, d) float32");
        return NULL;
    }
    int write = args[1] != Py_None;
    if (write && PyObject_GetBuffer(args[1], &ob, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS |
                                                      PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&qb);
        return NULL;
    }
    if (write && (ob.itemsize != 4 || !kind_in(&ob, "f") || ob.len != qb.len)) {
        PyBuffer_Release(&qb);
        PyBuffer_Release(&ob);
        PyErr_SetString(PyExc_ValueError, "units: out (b, d) float32, the queries' size");
        return NULL;
    }
    Py_ssize_t b = qb.shape[0], d = qb.shape[1];
    int finite = 1;
    for (Py_ssize_t r = 0; r < b && finite; r += 4) {
        const float *src[4];
        float *dst[4];
        int n = b - r < 4 ? (int)(b - r) : 4;
        for (int j = 0; j < n; j++) {
            src[j] = (const float *)qb.buf + (r + j) * d;
            dst[j] = write ? (float *)ob.buf + (r + j) * d : NULL;
        }
        finite = prepare_rows(src, write ? dst : NULL, n, d);
    }
    PyBuffer_Release(&qb);
    if (write)
        PyBuffer_Release(&ob);
    return PyBool_FromLong(finite);
}

/* gather_units(vectors, out, normalise) -> True, False (a NaN or an infinity), or None.
 * vectors: a list of b (d,) float32 C-order arrays (a batch's query vectors, as the API
 * parses them); out: a writable (b, d) float32 array, filled with the rows as `unit`
 * prepares them (normalise false: copied, only checked). None, with out unspecified, when
 * an item is not such an array: numpy's path decides (and names a wrong dimension). The
 * batch's np.array, float copy, sums and division took ~0.27 ms of a 500 x 128 HNSW batch
 * (bench.ann, timed in place); here they are one pass. */
static PyObject *gather_units(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "gather_units(vectors: list, out, normalise)");
        return NULL;
    }
    int normalise = PyObject_IsTrue(args[2]);
    if (normalise < 0)
        return NULL;
    PyObject *vectors = args[0];
    Py_buffer ob;
    if (PyObject_GetBuffer(args[1], &ob, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return NULL;
    Py_ssize_t b = PyList_GET_SIZE(vectors);
    if (ob.itemsize != 4 || !kind_in(&ob, "f") || ob.ndim != 2 || ob.shape[0] != b) {
        PyBuffer_Release(&ob);
        PyErr_SetString(PyExc_ValueError, "gather_units: out (b, d) float32, a row per vector");
        return NULL;
    }
    Py_ssize_t d = ob.shape[1];
    PyObject *result = Py_True;
    for (Py_ssize_t r = 0; r < b && result == Py_True; r += 4) {
        Py_buffer vb[4];
        const float *src[4];
        float *dst[4];
        int n = b - r < 4 ? (int)(b - r) : 4, held = 0;
        for (; held < n; held++) {
            PyObject *v = PyList_GET_ITEM(vectors, r + held);
            if (PyObject_GetBuffer(v, &vb[held], PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
                PyErr_Clear(); /* not an array: numpy's path decides */
                result = Py_None;
                break;
            }
            if (vb[held].itemsize != 4 || !kind_in(&vb[held], "f") || vb[held].ndim != 1 ||
                vb[held].len != d * 4) {
                PyBuffer_Release(&vb[held]);
                result = Py_None;
                break;
            }
            src[held] = vb[held].buf;
            dst[held] = (float *)ob.buf + (r + held) * d;
        }
        if (result == Py_True) {
            if (normalise) {
                if (!prepare_rows(src, dst, n, d))
                    result = Py_False;
            } else {
                if (!prepare_rows(src, NULL, n, d))
                    result = Py_False;
                for (int j = 0; j < n; j++)
                    memcpy(dst[j], src[j], (size_t)d * 4);
            }
        }
        for (int j = 0; j < held; j++)
            PyBuffer_Release(&vb[j]);
    }
    PyBuffer_Release(&ob);
    return Py_NewRef(result);
}

static PyMethodDef methods[] = {
    {"dots", (PyCFunction)(void (*)(void))dots, METH_FASTCALL,
     "dots(matrix, rows, query, out): inner products of query with the listed rows"},
    {"unit", (PyCFunction)(void (*)(void))unit, METH_FASTCALL,
     "unit(query, normalise): the query as searched (Cosine: unit length), None if not finite"},
    {"units", (PyCFunction)(void (*)(void))units, METH_FASTCALL,
     "units(queries, out): each row as `unit` prepares it, into out; False if not finite"},
    {"gather_units", (PyCFunction)(void (*)(void))gather_units, METH_FASTCALL,
     "gather_units(vectors, out, normalise): the list's rows as `unit` prepares them, into out"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_rows", "Scoring listed rows in place (gpu/flat.py uses it)", -1,
    methods,
};

PyMODINIT_FUNC PyInit__rows(void) {
    str_copy = PyUnicode_InternFromString("copy");
    if (!str_copy)
        return NULL;
    return PyModule_Create(&module);
}
