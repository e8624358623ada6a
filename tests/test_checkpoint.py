"""Checkpoints: npz + JSON manifest, atomic, keep-last-N, clear errors on bad files."""

import json
import os

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sideways_lab import checkpoint as ckpt


def _tree(scale=1.0, extra=False):
  p = (
    {"unit_1/~/conv": {"w": jnp.full((3, 3, 1, 4), scale), "b": jnp.zeros(4)}},
    {"head": {"w": jnp.arange(8.0).reshape(4, 2) * scale}},
  )
  if extra:
    p[1]["skip_proj_1"] = {"w": jnp.ones((4, 2))}
  return p


def test_roundtrip_with_opt_state(tmp_path):
  params = _tree(2.0)
  opt = optax.adam(1e-3)
  state = opt.init(params)
  _, state = opt.update(params, state, params)
  path = ckpt.save(tmp_path, 7, params, state, manifest={"scheme": "sideways"})
  assert path.name == "ckpt_00000007.npz" and path.with_suffix(".json").exists()
  with np.load(path, allow_pickle=False) as z:  # a plain npz, no pickle
    assert "__manifest__" in z.files
  p2, s2, man = ckpt.load(tmp_path, _tree(0.0), opt.init(_tree(0.0)))
  assert man["step"] == 7 and man["scheme"] == "sideways"
  for a, b in zip(
    np.concatenate([np.ravel(x) for x in _leaves(params)]),
    np.concatenate([np.ravel(x) for x in _leaves(p2)]),
  ):
    assert a == b
  np.testing.assert_array_equal(s2[0].count, state[0].count)
  np.testing.assert_array_equal(s2[0].nu[1]["head"]["w"], state[0].nu[1]["head"]["w"])
  assert json.loads(path.with_suffix(".json").read_text())["fingerprint"] == ckpt.fingerprint(
    params
  )


def _leaves(t):
  import jax

  return [np.asarray(x) for x in jax.tree_util.tree_leaves(t)]


def test_keep_last_n_and_no_temp_files(tmp_path):
  for s in range(5):
    ckpt.save(tmp_path, s, _tree(float(s)), keep=2)
  assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [3, 4]
  assert sorted(os.listdir(tmp_path)) == [
    "ckpt_00000003.json",
    "ckpt_00000003.npz",
    "ckpt_00000004.json",
    "ckpt_00000004.npz",
  ]
  p, _, man = ckpt.load(tmp_path, _tree())
  assert man["step"] == 4 and float(p[0]["unit_1/~/conv"]["w"][0, 0, 0, 0]) == 4.0


def test_another_model_is_rejected(tmp_path):
  ckpt.save(tmp_path, 1, _tree())
  with pytest.raises(ckpt.CheckpointError, match="another model"):
    ckpt.load(tmp_path, _tree(extra=True))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_checkpoint(tmp_path, damage):
  path = ckpt.save(tmp_path, 1, _tree())
  data = path.read_bytes()
  path.write_bytes(
    {"truncate": data[: len(data) // 2], "garbage": b"not a zip" * 10, "empty": b""}[damage]
  )
  before = path.read_bytes()
  with pytest.raises(ckpt.CheckpointError, match="corrupt or truncated"):
    ckpt.load(path, _tree())
  assert path.read_bytes() == before  # left as it is


def test_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="step"):
    ckpt.save(tmp_path, -1, _tree())
  with pytest.raises(ValueError, match="keep"):
    ckpt.save(tmp_path, 1, _tree(), keep=0)
  with pytest.raises(FileNotFoundError):
    ckpt.load(tmp_path, _tree())
  np.savez(tmp_path / "ckpt_00000009.npz", x=np.zeros(2))
  with pytest.raises(ckpt.CheckpointError, match="manifest"):
    ckpt.load(tmp_path, _tree())
