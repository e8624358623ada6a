"""What every test module shares: one compilation cache for the whole run, and compiled programs
released after each module."""

import gc
import os
import shutil
import tempfile

# One persistent compilation cache for the run, set before JAX is imported and inherited by
# every process a test starts: the pytest-xdist workers, the notebook kernels, JupyterLab's
# kernels in the browser test and the workers of the device and multi-process tests. A program
# that one of them compiled is read back by the others instead of being compiled again (the
# browser test re-runs notebooks that test_notebooks executed; modules rebuild the same small
# models). The cache is keyed by the program, the XLA flags and the backend, so a hit is the
# program a compilation would have produced. A cache the user set is used and left alone.
_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
_OWN_CACHE = _CACHE_ENV not in os.environ
if _OWN_CACHE:
  os.environ[_CACHE_ENV] = tempfile.mkdtemp(prefix="sideways-lab-jax-cache-")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402  (after the cache's environment)
import pytest  # noqa: E402


def pytest_unconfigure(config):
  """The run's cache is removed by the process that made it (the controller under xdist)."""
  if _OWN_CACHE and not hasattr(config, "workerinput"):
    shutil.rmtree(os.environ.pop(_CACHE_ENV), ignore_errors=True)


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
