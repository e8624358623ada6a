"""What every test module shares: JAX's compiled programs are released after each module."""

import gc

import jax
import pytest


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Clears JAX's caches of compiled programs once a test module is done.

  Every compiled XLA:CPU program holds about three memory mappings until it is released. The
  suite compiles tens of thousands of programs in one process, and past Linux's default limit
  of 65530 mappings per process (``vm.max_map_count``) the next compilation aborts the
  interpreter. Released after each module, the mappings stay at what one module needs.
  """
  yield
  jax.clear_caches()
  gc.collect()
