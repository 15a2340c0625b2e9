/* The unfiltered HNSW search over a faiss IndexHNSWFlat's own arrays, without copying them.
 *
 * Why: one single query through faiss's walk cost ~20 % more than hnswlib's on the same
 * graph (bench.ann). The walk here is faiss's algorithm (greedy descent through the upper
 * levels, then a beam of width ef on level 0: same graph, same ef, same results, tested
 * against faiss) with the changes the measurements favoured: a visited bitset (n/8 bytes,
 * cache resident, where a byte per node is not); each expanded node's unvisited neighbours
 * collected first with their vectors prefetched, then scored four at a time; each pushed
 * candidate's offset and the next candidate's neighbour list prefetched (faiss keeps links
 * apart from vectors, so each expansion missed twice on them: the largest share, py-spy).
 * Called through METH_FASTCALL with the GIL released: no per-call allocation, no wrapper.
 *
 * A Walker borrows raw pointers into the index; the Python side passes the faiss index as
 * `owner`, which the Walker keeps alive, and never changes an index once built (an extension
 * works on a copy), so the pointers stay valid for the Walker's life.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LEVELS 64
#define MAX_DEGREE 2048 /* 2 * hnsw_config.m at level 0; m is at most 1024 */

typedef struct {
    float d;
    int32_t id;
} item;

typedef struct {
    PyObject_HEAD
    const float *x;          /* n x d float32 vectors */
    const int32_t *nbrs;     /* faiss HNSW::neighbors */
    const uint64_t *offsets; /* faiss HNSW::offsets (n + 1) */
    int32_t cum[MAX_LEVELS + 1];
    int nlevels;             /* entries of cum - 1 */
    Py_ssize_t n;
    int d;
    int entry;
    int max_level;
    int metric;              /* 0: inner product (faiss reports it as is), 1: squared L2 */
    PyObject *owner;
} Walker;

/* Per-thread scratch, grown on demand and reused; freed when its thread ends. The visited
 * bitset is all zeros between walks: a walk clears the words it set (listed in `seen`), so a
 * query costs what it visits, not n/8 bytes of memset. */
typedef struct {
    uint64_t *bits;
    size_t nbits_words;
    int32_t *seen;
    size_t seen_cap;
    item *cand;
    size_t cand_cap;
    item *res;
    size_t res_cap;
} scratch;

static pthread_key_t scratch_key;

static void free_scratch(void *p) {
    scratch *s = p;
    free(s->bits);
    free(s->seen);
    free(s->cand);
    free(s->res);
    free(s);
}

static scratch *thread_scratch(void) {
    scratch *s = pthread_getspecific(scratch_key);
    if (!s) {
        s = calloc(1, sizeof(scratch));
        if (s && pthread_setspecific(scratch_key, s)) {
            free(s);
            s = NULL;
        }
    }
    return s;
}

static int grow(void **p, size_t *cap, size_t need, size_t size) {
    if (*cap >= need)
        return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * size);
    if (!q)
        return -1;
    *p = q;
    *cap = c;
    return 0;
}

static int grow_bits(scratch *s, size_t words) {
    if (s->nbits_words >= words)
        return 0;
    uint64_t *b = calloc(words, sizeof(uint64_t));
    if (!b)
        return -1;
    free(s->bits);
    s->bits = b;
    s->nbits_words = words;
    return 0;
}

/* cand: min-heap on d; res: max-heap on d (its top is the worst kept result). One
 * definition for both orders; the comparisons are passed as written (NaN distances compare
 * false either way, so each keeps its own break condition rather than a negated one). */
#define HEAP_OPS(kind, STAYS_UP, PICK, STAYS_DOWN)                                        \
    static inline __attribute__((always_inline)) void up_##kind(item *h, size_t i) {      \
        item v = h[i];                                                                    \
        while (i) {                                                                       \
            size_t p = (i - 1) >> 1;                                                      \
            if (h[p].d STAYS_UP v.d)                                                      \
                break;                                                                    \
            h[i] = h[p];                                                                  \
            i = p;                                                                        \
        }                                                                                 \
        h[i] = v;                                                                         \
    }                                                                                     \
    static inline __attribute__((always_inline)) void down_##kind(item *h, size_t n,      \
                                                                  size_t i) {             \
        item v = h[i];                                                                    \
        for (;;) {                                                                        \
            size_t c = 2 * i + 1;                                                         \
            if (c >= n)                                                                   \
                break;                                                                    \
            if (c + 1 < n && h[c + 1].d PICK h[c].d)                                      \
                c++;                                                                      \
            if (h[c].d STAYS_DOWN v.d)                                                    \
                break;                                                                    \
            h[i] = h[c];                                                                  \
            i = c;                                                                        \
        }                                                                                 \
        h[i] = v;                                                                         \
    }

HEAP_OPS(min, <=, <, >=)
HEAP_OPS(max, >=, >, <=)

/* Distances are "lower is closer": -<q, x> for inner product, |q - x|^2 for L2. */
static inline __attribute__((always_inline)) float dist1(const float *restrict q, const float *restrict a, int d, int metric) {
    float s = 0.f;
    if (metric == 0) {
#pragma omp simd reduction(+ : s)
        for (int i = 0; i < d; i++)
            s += q[i] * a[i];
        return -s;
    }
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < d; i++) {
        float t = q[i] - a[i];
        s += t * t;
    }
    return s;
}

static inline __attribute__((always_inline)) void dist4(const float *restrict q, const float *restrict a0,
                         const float *restrict a1, const float *restrict a2,
                         const float *restrict a3, int d, int metric, float *out) {
    float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
    if (metric == 0) {
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (int i = 0; i < d; i++) {
            float qi = q[i];
            s0 += qi * a0[i];
            s1 += qi * a1[i];
            s2 += qi * a2[i];
            s3 += qi * a3[i];
        }
        out[0] = -s0, out[1] = -s1, out[2] = -s2, out[3] = -s3;
        return;
    }
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int i = 0; i < d; i++) {
        float qi = q[i], t0 = qi - a0[i], t1 = qi - a1[i], t2 = qi - a2[i], t3 = qi - a3[i];
        s0 += t0 * t0;
        s1 += t1 * t1;
        s2 += t2 * t2;
        s3 += t3 * t3;
    }
    out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3;
}

/* The first PREFETCH_LINES cache lines of a row (all of a 128-d one): the hardware
 * prefetcher streams the rest. Whole 768-d rows (48 lines each, up to 32 rows at once)
 * overran the line-fill buffers and cost 25 % more than hnswlib (bench.ann, LSA). */
#define PREFETCH_LINES 8
static inline __attribute__((always_inline)) void prefetch_row(const float *p, int d) {
    const char *c = (const char *)p;
    for (int o = 0; o < d * 4 && o < PREFETCH_LINES * 64; o += 64)
        __builtin_prefetch(c + o);
}

/* One query: the k closest of the beam, closest first, into out_d / out_i (distances as
 * faiss reports them: inner products, or squared L2); -1 ids past the reachable ones.
 * Returns -1 when scratch memory cannot be had. */
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default"))) static int
walk_one(const Walker *w, const float *q, int k, int ef, float *out_d, int64_t *out_i) {
    const int d = w->d, metric = w->metric;
    const float *x = w->x;
    scratch *tls = thread_scratch();
    if (!tls || grow_bits(tls, ((size_t)w->n + 63) / 64) ||
        grow((void **)&tls->res, &tls->res_cap, (size_t)ef + 1, sizeof(item)) ||
        grow((void **)&tls->cand, &tls->cand_cap, (size_t)ef + MAX_DEGREE, sizeof(item)) ||
        grow((void **)&tls->seen, &tls->seen_cap, (size_t)ef + MAX_DEGREE, sizeof(int32_t)))
        return -1;
    uint64_t *bits = tls->bits;

    int cur = w->entry;
    float dcur = dist1(q, x + (size_t)cur * d, d, metric);
    for (int level = w->max_level; level >= 1; level--) {
        const int lo = w->cum[level], deg = w->cum[level + 1] - lo;
        for (;;) { /* greedy: move to the closest neighbour until none is closer */
            const int32_t *nb = w->nbrs + w->offsets[cur] + lo;
            int prev = cur;
            for (int j = 0; j < deg && nb[j] >= 0; j++)
                prefetch_row(x + (size_t)nb[j] * d, d);
            for (int j = 0; j < deg && nb[j] >= 0; j++) {
                float dv = dist1(q, x + (size_t)nb[j] * d, d, metric);
                if (dv < dcur) {
                    dcur = dv;
                    cur = nb[j];
                }
            }
            if (cur == prev)
                break;
        }
    }

    item *cand = tls->cand, *res = tls->res;
    int32_t *seen = tls->seen;
    size_t nc = 1, nr = 1, ns = 1;
    bits[cur >> 6] |= 1ull << (cur & 63);
    seen[0] = cur;
    int oom = 0;
    cand[0].d = res[0].d = dcur;
    cand[0].id = res[0].id = cur;
    const int deg0 = w->cum[1];
    int32_t fresh[MAX_DEGREE];
    float fd[MAX_DEGREE];
    while (nc) {
        item c = cand[0];
        if (nr >= (size_t)ef && c.d > res[0].d)
            break; /* the closest candidate is farther than every kept result */
        cand[0] = cand[--nc];
        if (nc)
            down_min(cand, nc, 0);
        const int32_t *nb = w->nbrs + w->offsets[c.id];
        if (nc) { /* the likely next one to expand: its list arrives while this one is scored */
            const int32_t *nx = w->nbrs + w->offsets[cand[0].id];
            for (int j = 0; j < deg0; j += 16)
                __builtin_prefetch(nx + j);
        }
        if (ns + deg0 > tls->seen_cap || nc + deg0 > tls->cand_cap) {
            if (grow((void **)&tls->seen, &tls->seen_cap, ns + deg0, sizeof(int32_t)) ||
                grow((void **)&tls->cand, &tls->cand_cap, nc + deg0, sizeof(item))) {
                oom = 1;
                break;
            }
            seen = tls->seen;
            cand = tls->cand;
        }
        int nf = 0;
        for (int j = 0; j < deg0; j++) {
            int32_t v = nb[j];
            if (v < 0)
                break;
            uint64_t m = 1ull << (v & 63);
            if (bits[v >> 6] & m)
                continue;
            bits[v >> 6] |= m;
            seen[ns++] = v;
            fresh[nf++] = v;
            prefetch_row(x + (size_t)v * d, d);
        }
        int j = 0;
        for (; j + 4 <= nf; j += 4)
            dist4(q, x + (size_t)fresh[j] * d, x + (size_t)fresh[j + 1] * d,
                  x + (size_t)fresh[j + 2] * d, x + (size_t)fresh[j + 3] * d, d, metric, fd + j);
        for (; j < nf; j++)
            fd[j] = dist1(q, x + (size_t)fresh[j] * d, d, metric);
        for (j = 0; j < nf; j++) {
            float dv = fd[j];
            if (nr < (size_t)ef || dv < res[0].d) {
                cand[nc].d = dv;
                cand[nc].id = fresh[j];
                up_min(cand, nc++);
                __builtin_prefetch(w->offsets + fresh[j]); /* read when it is expanded */
                if (nr < (size_t)ef) {
                    res[nr].d = dv;
                    res[nr].id = fresh[j];
                    up_max(res, nr++);
                } else {
                    res[0].d = dv;
                    res[0].id = fresh[j];
                    down_max(res, nr, 0);
                }
            }
        }
    }
    for (size_t i = 0; i < ns; i++)
        bits[seen[i] >> 6] = 0;
    if (oom)
        return -1;
    /* pop the max-heap from the back: res[0..found) ends up closest first */
    size_t found = nr;
    while (nr > 0) {
        item t = res[0];
        res[0] = res[--nr];
        if (nr)
            down_max(res, nr, 0);
        res[nr] = t;
    }
    for (int i = 0; i < k; i++) {
        if ((size_t)i < found) {
            out_d[i] = metric == 0 ? -res[i].d : res[i].d;
            out_i[i] = res[i].id;
        } else {
            out_d[i] = metric == 0 ? -INFINITY : INFINITY;
            out_i[i] = -1;
        }
    }
    return (int)(found < (size_t)k ? found : (size_t)k);
}

/* ---- Python glue ------------------------------------------------------------------------ */

static PyObject *addr_or_err(PyObject *o, void **out) {
    *out = PyLong_AsVoidPtr(o);
    return (*out == NULL && PyErr_Occurred()) ? NULL : o;
}

static int Walker_init(Walker *self, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"vectors", "n", "d", "neighbors", "offsets", "cum", "entry",
                         "max_level", "metric", "owner", NULL};
    PyObject *xo, *no, *oo, *cumo, *owner;
    Py_ssize_t n;
    int d, entry, max_level, metric;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OniOOOiiiO", kw, &xo, &n, &d, &no, &oo, &cumo,
                                     &entry, &max_level, &metric, &owner))
        return -1;
    void *xp, *np_, *op;
    if (!addr_or_err(xo, &xp) || !addr_or_err(no, &np_) || !addr_or_err(oo, &op))
        return -1;
    PyObject *seq = PySequence_Fast(cumo, "cum must be a sequence");
    if (!seq)
        return -1;
    Py_ssize_t nl = PySequence_Fast_GET_SIZE(seq);
    if (nl < 2 || nl > MAX_LEVELS + 1) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "cum: 2 to 65 entries");
        return -1;
    }
    for (Py_ssize_t i = 0; i < nl; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        self->cum[i] = (int32_t)v;
    }
    Py_DECREF(seq);
    if (n <= 0 || d <= 0 || entry < 0 || entry >= n || max_level < 0 || max_level >= nl - 1 ||
        (metric != 0 && metric != 1) || self->cum[1] <= 0 || self->cum[1] > MAX_DEGREE ||
        !xp || !np_ || !op) {
        PyErr_SetString(PyExc_ValueError, "Walker: inconsistent graph");
        return -1;
    }
    for (Py_ssize_t i = 1; i < nl; i++) {
        if (self->cum[i] - self->cum[i - 1] > MAX_DEGREE || self->cum[i] < self->cum[i - 1]) {
            PyErr_SetString(PyExc_ValueError, "Walker: level degree out of range");
            return -1;
        }
    }
    self->x = xp;
    self->nbrs = np_;
    self->offsets = op;
    self->nlevels = (int)(nl - 1);
    self->n = n;
    self->d = d;
    self->entry = entry;
    self->max_level = max_level;
    self->metric = metric;
    Py_XSETREF(self->owner, Py_NewRef(owner));
    return 0;
}

static void Walker_dealloc(Walker *self) {
    Py_XDECREF(self->owner);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A buffer's item kind is one of `kinds`, past any byte-order mark (numpy exports int64 as
 * 'l' on LP64). */
static int kind_in(const Py_buffer *b, const char *kinds) {
    const char *f = b->format;
    if (*f == '@' || *f == '=' || *f == '<')
        f++;
    return f[0] && !f[1] && strchr(kinds, f[0]) != NULL;
}

/* Borrow a C-contiguous buffer (writable if asked) of at least `need` items of `size` bytes,
 * of a kind in `kinds` ("f": float32; "ql": int64). */
static int get_buf(PyObject *o, Py_buffer *b, int writable, Py_ssize_t need, Py_ssize_t size,
                   const char *kinds, const char *what) {
    if (PyObject_GetBuffer(o, b, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS |
                                     PyBUF_FORMAT) < 0)
        return -1;
    if (b->itemsize != size || b->len < need * size || !kind_in(b, kinds)) {
        PyErr_Format(PyExc_ValueError, "%s: %zd items of %zd bytes (%s) needed", what, need,
                     size, kinds);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

/* search(queries, k, ef, out_d, out_i) -> found for the first query.
 * queries: m x d float32 (C order); out_d: m x k float32; out_i: m x k int64. The GIL is
 * released for the whole batch (the server's other threads go on; callers split big batches
 * across threads). */
static PyObject *Walker_search(Walker *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "search(queries, k, ef, out_d, out_i)");
        return NULL;
    }
    long k = PyLong_AsLong(args[1]);
    long ef = PyErr_Occurred() ? 0 : PyLong_AsLong(args[2]);
    if (PyErr_Occurred())
        return NULL;
    if (k <= 0 || ef < k || ef > 1 << 20) {
        PyErr_SetString(PyExc_ValueError, "search: need 0 < k <= ef");
        return NULL;
    }
    Py_buffer qb, db, ib;
    if (get_buf(args[0], &qb, 0, self->d, 4, "f", "queries") < 0)
        return NULL;
    Py_ssize_t m = qb.len / (4 * (Py_ssize_t)self->d);
    if (qb.len != m * 4 * self->d) {
        PyBuffer_Release(&qb);
        PyErr_SetString(PyExc_ValueError, "queries: a whole number of d-float rows");
        return NULL;
    }
    if (get_buf(args[3], &db, 1, m * k, 4, "f", "out_d") < 0) {
        PyBuffer_Release(&qb);
        return NULL;
    }
    if (get_buf(args[4], &ib, 1, m * k, 8, "ql", "out_i") < 0) {
        PyBuffer_Release(&qb);
        PyBuffer_Release(&db);
        return NULL;
    }
    int first = 0, bad = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < m && !bad; i++) {
        int f = walk_one(self, (const float *)qb.buf + i * self->d, (int)k, (int)ef,
                         (float *)db.buf + i * k, (int64_t *)ib.buf + i * k);
        if (f < 0)
            bad = 1;
        else if (i == 0)
            first = f;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&qb);
    PyBuffer_Release(&db);
    PyBuffer_Release(&ib);
    if (bad)
        return PyErr_NoMemory();
    return PyLong_FromLong(first);
}

/* run(queries, k, ef, out_d, out_i, bounds, state, most) -> chunks walked.
 * A batch split into c chunks, query rows bounds[j]..bounds[j+1] (int64, c + 1 entries),
 * walked by several threads: each call takes chunks from the counter state[0] (int64,
 * atomically) until none is left or it has walked `most`, and sets state[1 + j] to 1 once
 * chunk j's results are written. The GIL is released throughout: a pool thread walks its
 * share in one call, and the calling thread may use the results of finished chunks between
 * its own (engine/ann.py `_walk`; Python-level scheduling made every chunk wait for the GIL
 * while the caller built records). */
static PyObject *Walker_run(Walker *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "run(queries, k, ef, out_d, out_i, bounds, state, most)");
        return NULL;
    }
    long k = PyLong_AsLong(args[1]);
    long ef = PyErr_Occurred() ? 0 : PyLong_AsLong(args[2]);
    Py_ssize_t most = PyErr_Occurred() ? 0 : PyLong_AsSsize_t(args[7]);
    if (PyErr_Occurred())
        return NULL;
    if (k <= 0 || ef < k || ef > 1 << 20 || most < 0) {
        PyErr_SetString(PyExc_ValueError, "run: need 0 < k <= ef and most >= 0");
        return NULL;
    }
    Py_buffer qb, db, ib, bb, sb;
    if (get_buf(args[0], &qb, 0, self->d, 4, "f", "queries") < 0)
        return NULL;
    Py_ssize_t m = qb.len / (4 * (Py_ssize_t)self->d);
    int have = 1;
    PyObject *result = NULL;
    if (qb.len != m * 4 * self->d) {
        PyErr_SetString(PyExc_ValueError, "queries: a whole number of d-float rows");
        goto done;
    }
    if (get_buf(args[3], &db, 1, m * k, 4, "f", "out_d") < 0)
        goto done;
    have = 2;
    if (get_buf(args[4], &ib, 1, m * k, 8, "ql", "out_i") < 0)
        goto done;
    have = 3;
    if (get_buf(args[5], &bb, 0, 1, 8, "ql", "bounds") < 0)
        goto done;
    have = 4;
    Py_ssize_t c = bb.len / 8 - 1;
    if (get_buf(args[6], &sb, 1, 1 + c, 8, "ql", "state") < 0)
        goto done;
    have = 5;
    const int64_t *bounds = bb.buf;
    for (Py_ssize_t j = 0; j < c; j++)
        if (bounds[j] < 0 || bounds[j] > bounds[j + 1] || bounds[j + 1] > m) {
            PyErr_SetString(PyExc_ValueError, "run: bounds ascending within the queries");
            goto done;
        }
    int64_t *state = sb.buf;
    Py_ssize_t walked = 0;
    int bad = 0;
    Py_BEGIN_ALLOW_THREADS
    while (walked < most && !bad) {
        int64_t j = __atomic_fetch_add(&state[0], 1, __ATOMIC_RELAXED);
        if (j < 0 || j >= c) /* a counter set past the end stops the walk; below 0: refused */
            break;
        for (int64_t i = bounds[j]; i < bounds[j + 1] && !bad; i++)
            bad = walk_one(self, (const float *)qb.buf + i * self->d, (int)k, (int)ef,
                           (float *)db.buf + i * k, (int64_t *)ib.buf + i * k) < 0;
        /* release: the chunk's results are visible to whoever reads this flag */
        __atomic_store_n(&state[1 + j], bad ? -1 : 1, __ATOMIC_RELEASE);
        walked++;
    }
    Py_END_ALLOW_THREADS
    result = bad ? PyErr_NoMemory() : PyLong_FromSsize_t(walked);
done:
    if (have >= 5)
        PyBuffer_Release(&sb);
    if (have >= 4)
        PyBuffer_Release(&bb);
    if (have >= 3)
        PyBuffer_Release(&ib);
    if (have >= 2)
        PyBuffer_Release(&db);
    PyBuffer_Release(&qb);
    return result;
}

/* ready(state, start) -> how many chunks from `start` on are finished, in a row (the state
 * that `run` keeps; acquire loads, so their results are visible to the caller). Negative
 * when one of them failed. */
static PyObject *Walker_ready(Walker *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "ready(state, start)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer sb;
    if (get_buf(args[0], &sb, 0, 1, 8, "ql", "state") < 0)
        return NULL;
    Py_ssize_t c = sb.len / 8 - 1, n = 0;
    int64_t *flags = (int64_t *)sb.buf + 1;
    for (Py_ssize_t j = start < 0 ? c : start; j < c; j++) {
        int64_t f = __atomic_load_n(&flags[j], __ATOMIC_ACQUIRE);
        if (f < 0) {
            n = -1;
            break;
        }
        if (f == 0)
            break;
        n++;
    }
    PyBuffer_Release(&sb);
    return PyLong_FromSsize_t(n);
}

static PyMethodDef Walker_methods[] = {
    {"search", (PyCFunction)(void (*)(void))Walker_search, METH_FASTCALL,
     "search(queries, k, ef, out_d, out_i) -> results found for the first query"},
    {"run", (PyCFunction)(void (*)(void))Walker_run, METH_FASTCALL,
     "run(queries, k, ef, out_d, out_i, bounds, state, most) -> chunks of a batch walked"},
    {"ready", (PyCFunction)(void (*)(void))Walker_ready, METH_FASTCALL,
     "ready(state, start) -> chunks finished in a row from start (negative: one failed)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject WalkerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "engine._hnsw_walk.Walker",
    .tp_basicsize = sizeof(Walker),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Unfiltered HNSW search over a faiss IndexHNSWFlat's arrays",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Walker_init,
    .tp_dealloc = (destructor)Walker_dealloc,
    .tp_methods = Walker_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_hnsw_walk", "Quiver's HNSW walk (engine/ann.py uses it)", -1, NULL,
};

PyMODINIT_FUNC PyInit__hnsw_walk(void) {
    if (pthread_key_create(&scratch_key, free_scratch)) {
        PyErr_SetString(PyExc_RuntimeError, "pthread_key_create failed");
        return NULL;
    }
    if (PyType_Ready(&WalkerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "Walker", (PyObject *)&WalkerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
