"""Quiver's compiled modules: engine/_hnsw_walk.c (the unfiltered HNSW walk), gpu/_rows.c
(one query's inner products with listed rows) and engine/_records.c (plain search records);
each file says why it exists.

All optional: where no C compiler is found the install goes on without them, and the same
searches run through faiss, numpy and Python (the same results, slower). Everything else
about the package is in pyproject.toml.
"""

from setuptools import Extension, setup

# -fopenmp-simd: the `omp simd` reductions vectorise without linking OpenMP; the hot loops
# are cloned per instruction set (target_clones), so no -march is baked into the build
FLAGS = ["-O3", "-fopenmp-simd", "-Wall"]

setup(ext_modules=[
    Extension("engine._hnsw_walk", ["engine/_hnsw_walk.c"], extra_compile_args=FLAGS,
              optional=True),
    Extension("gpu._rows", ["gpu/_rows.c"], extra_compile_args=FLAGS, optional=True),
    Extension("engine._records", ["engine/_records.c"], extra_compile_args=FLAGS,
              optional=True),
])
