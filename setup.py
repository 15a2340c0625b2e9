"""Quiver's two compiled modules: engine/_hnsw_walk.c (the unfiltered HNSW walk) and
gpu/_rows.c (one query's inner products with listed rows); each file says why it exists.

Both optional: where no C compiler is found the install goes on without them, engine/ann.py
walks the graph through faiss and gpu/flat.py gathers rows for a GEMV (the same results,
slower single queries). Everything else about the package is in pyproject.toml.
"""

from setuptools import Extension, setup

# -fopenmp-simd: the `omp simd` reductions vectorise without linking OpenMP; the hot loops
# are cloned per instruction set (target_clones), so no -march is baked into the build
FLAGS = ["-O3", "-fopenmp-simd", "-Wall"]

setup(ext_modules=[
    Extension("engine._hnsw_walk", ["engine/_hnsw_walk.c"], extra_compile_args=FLAGS,
              optional=True),
    Extension("gpu._rows", ["gpu/_rows.c"], extra_compile_args=FLAGS, optional=True),
])
