"""Quiver's one compiled module, engine/_hnsw_walk.c (the unfiltered HNSW walk; see the file).

Optional: where no C compiler is found the install goes on without it and engine/ann.py walks
the graph through faiss instead (same results, slower single queries). Everything else about
the package is in pyproject.toml.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "engine._hnsw_walk", ["engine/_hnsw_walk.c"],
    # -fopenmp-simd: the `omp simd` reductions vectorise without linking OpenMP; the walk is
    # cloned per instruction set (target_clones), so no -march is baked into the build
    extra_compile_args=["-O3", "-fopenmp-simd", "-Wall"],
    optional=True)])
