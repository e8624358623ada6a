"""Trainer: per-clip and online steps, reproducibility, interrupt/resume, compare."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sideways_lab import checkpoint as ckpt
from sideways_lab import schedule, training
from sideways_lab.models import SCHEMES


def tiny(task="motion-classes", scheme="skip_sideways", **kw):
  base = dict(
    steps=4,
    batch_size=2,
    eval_clips=4,
    log_every=1,
    model=dict(num_units=3, width=4, groups=2),
    data=dict(num_frames=6, size=(8, 8)),
  )
  for k in ("model", "data"):
    base[k].update(kw.pop(k, {}))
  base.update(kw)
  return training.default_config(task, scheme, **base)


def _flat(params):
  return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(params)])


def test_train_is_reproducible_and_learns_something(tmp_path):
  cfg = tiny(steps=3)
  r1 = training.train(cfg, tmp_path / "a", progress=False)
  r2 = training.train(cfg, None, progress=False, evaluate_at_end=False)
  np.testing.assert_array_equal(_flat(r1.params), _flat(r2.params))
  p0, _ = training.Trainer(cfg).init()
  assert not np.array_equal(_flat(p0), _flat(r1.params))
  assert set(r1.test) == {"accuracy", "tick_accuracy", "loss", "confusion"}
  assert np.asarray(r1.test["confusion"]).sum() == cfg.eval_clips
  lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
  assert [x["step"] for x in lines if "loss" in x] == [1, 2, 3]
  assert "test" in lines[-1]
  assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "a")] == [3]


def test_non_finite_loss_stops_the_run_before_a_checkpoint(tmp_path, monkeypatch):
  """The loss stays on the device between log lines, but is checked before every save."""
  cfg = tiny(steps=6, log_every=5, checkpoint_every=2)
  step = training._Program._step_impl

  def nan_from_step_2(self, params, opt_state, video, targets):
    params, opt_state, loss = step(self, params, opt_state, video, targets)
    return params, opt_state, loss * jnp.where(opt_state[-1][0].count >= 2, jnp.nan, 1.0)

  monkeypatch.setattr(training._Program, "_step_impl", nan_from_step_2)
  training._program.cache_clear()  # programs compiled before the patch must not be reused
  try:
    with pytest.raises(FloatingPointError, match="by step 2"):
      training.train(cfg, tmp_path, progress=False)
  finally:
    training._program.cache_clear()
  assert ckpt.list_checkpoints(tmp_path) == []


def test_interrupt_and_resume_give_identical_params(tmp_path):
  cfg = tiny("next-frame", "sideways", steps=5, checkpoint_every=2)
  full = training.train(cfg, tmp_path / "full", progress=False, evaluate_at_end=False)

  def interrupt(step, loss):
    if step == 3:
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    training.train(cfg, tmp_path / "run", progress=False, callback=interrupt)
  # Ctrl-C saved the last completed step (3), besides the periodic one (2)
  assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "run")] == [2, 3]
  resumed = training.train(
    cfg, tmp_path / "run", resume=True, progress=False, evaluate_at_end=False
  )
  assert resumed.resumed_from == 3 and resumed.step == 5
  np.testing.assert_array_equal(_flat(resumed.params), _flat(full.params))
  np.testing.assert_array_equal(_flat(resumed.opt_state), _flat(full.opt_state))
  steps = [
    json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
  ]
  assert steps == [1, 2, 3, 4, 5]


def test_existing_run_is_not_overwritten(tmp_path):
  cfg = tiny(steps=1)
  training.train(cfg, tmp_path, progress=False, evaluate_at_end=False)
  before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
  with pytest.raises(FileExistsError, match="resume"):
    training.train(cfg, tmp_path, progress=False)
  with pytest.raises(ValueError, match="another configuration"):
    training.train(cfg.replace(learning_rate=0.5), tmp_path, resume=True, progress=False)
  other = tiny(steps=2, model=dict(width=8, groups=2))
  with pytest.raises((ValueError, ckpt.CheckpointError), match="another"):
    training.train(other, tmp_path, resume=True, progress=False)
  assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_online_updates():
  cfg = tiny("next-frame", "skip_sideways", steps=1, update_every=2)
  tr = training.Trainer(cfg)
  p0, o0 = tr.init()
  p1, _, loss = tr.train_step(p0, o0, 0)
  assert np.isfinite(loss)
  assert not np.array_equal(_flat(p0), _flat(p1))
  # backprop online works too; pipelined_exact online is refused
  bp = training.Trainer(tiny("motion-classes", "backprop", steps=1, update_every=3))
  p, o = bp.init()
  assert np.isfinite(bp.train_step(p, o, 0)[2])
  with pytest.raises(ValueError, match="online"):
    tiny(scheme="skip_exact", update_every=2)


def test_bad_configuration():
  with pytest.raises(ValueError, match="scheme"):
    tiny(scheme="sidewise")
  with pytest.raises(ValueError, match="task"):
    training.default_config("cifar")
  with pytest.raises(ValueError, match="learning_rate"):
    tiny(learning_rate=-1.0)
  with pytest.raises(ValueError, match="update_every"):
    tiny(update_every=7)
  with pytest.raises(ValueError, match="too short"):
    tiny("next-frame", "sideways", data=dict(num_frames=3))
  with pytest.raises(ValueError, match="optimizer"):
    tiny(optimizer="lbfgs")
  with pytest.raises(ValueError, match="schedule"):
    tiny(schedule="step")


def test_warmup_then_constant_or_cosine_learning_rate():
  cfg = training.default_config("digits", "sideways", quick=True, learning_rate=0.1, warmup=4)
  lr = training.learning_rate(cfg.replace(steps=20))
  np.testing.assert_allclose([lr(0), lr(2), lr(4), lr(19)], [0.0, 0.05, 0.1, 0.1], atol=1e-7)
  cos = training.learning_rate(cfg.replace(steps=20, schedule="cosine"))
  np.testing.assert_allclose([cos(2), cos(4), cos(12), cos(20)], [0.05, 0.1, 0.05, 0.0], atol=1e-7)
  assert training.learning_rate(cfg.replace(warmup=0)) == 0.1


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_the_first_steps_of_a_longer_run_are_the_shorter_run(tmp_path, scheme):
  """A constant rate after the warmup makes a run's held-out evaluations the results of
  shorter runs (docs/design.md §9): the first n steps of an N-step run equal the n-step run,
  in parameters, optimiser state, losses and the held-out metrics at n, for n inside the
  warmup (3 of 4 updates) and past it (6)."""
  cfg = tiny(scheme=scheme, steps=8, warmup=4, eval_every=3, checkpoint_every=3, keep=3)
  seen = []
  long = training.train(
    cfg, tmp_path / "long", progress=False, callback=lambda n, x: seen.append(x)
  )
  evals = {h["step"]: h["eval"] for h in long.history if "eval" in h}
  assert sorted(evals) == [3, 6]
  template = training.Trainer(cfg).init()
  for n in (3, 6):
    short_seen = []
    short = training.train(
      cfg.replace(steps=n, eval_every=0, checkpoint_every=0),
      tmp_path / f"short{n}",
      progress=False,
      callback=lambda n, x: short_seen.append(x),
    )
    (path,) = [p for s, p in ckpt.list_checkpoints(tmp_path / "long") if s == n]
    params, opt_state, _ = ckpt.load(path, *template)
    np.testing.assert_array_equal(_flat(short.params), _flat(params))
    np.testing.assert_array_equal(_flat(short.opt_state), _flat(opt_state))
    assert short_seen == seen[:n]
    assert json.dumps(short.test, sort_keys=True) == json.dumps(evals[n], sort_keys=True)
  # the warmup does not depend on the run's length; a cosine decay does, by design
  lr = [training.learning_rate(cfg.replace(steps=k)) for k in (3, 8, 1000)]
  np.testing.assert_array_equal(
    [[f(u) for u in range(8)] for f in lr[1:]], [[lr[0](u) for u in range(8)]] * 2
  )
  cos = [training.learning_rate(cfg.replace(steps=k, schedule="cosine")) for k in (6, 8)]
  assert cos[0](5) != cos[1](5)


def test_logged_loss_is_the_mean_since_the_last_line(tmp_path):
  cfg = training.default_config("digits", "sideways", quick=True, steps=6, log_every=3)
  seen = []
  training.train(cfg, tmp_path, callback=lambda n, loss: seen.append(loss))
  steps, losses = training.history(tmp_path)
  assert list(steps) == [3, 6]
  np.testing.assert_allclose(losses, [np.mean(seen[:3]), np.mean(seen[3:])], rtol=1e-6)


def test_stash_is_validated_and_only_for_sideways():
  cfg = training.default_config("digits", "sideways", quick=True, stash=[2, 0])
  assert cfg.stash == (2, 0) and cfg.to_dict()["stash"] == [2, 0]
  assert training.TrainConfig.from_dict(cfg.to_dict()) == cfg
  with pytest.raises(ValueError, match="stash"):
    training.default_config("digits", "sideways", quick=True, stash=-1)
  with pytest.raises(ValueError, match="sideways method only"):
    training.default_config("digits", "backprop", quick=True, stash=1)


def test_stash_options_and_carry_in_configs():
  Stash = schedule.Stash
  plain = training.default_config("digits", "sideways", quick=True, stash=[2, 0])
  same = training.default_config("digits", "sideways", quick=True, stash=Stash((2, 0)))
  assert same == plain and same.to_dict() == plain.to_dict()  # default options: plain depths
  int8 = training.default_config("digits", "sideways", quick=True, stash=Stash([4, 0], "int8"))
  assert int8.stash == Stash((4, 0), "int8")
  assert int8.to_dict()["stash"] == {"depths": [4, 0], "dtype": "int8"}
  assert training.TrainConfig.from_dict(json.loads(json.dumps(int8.to_dict()))) == int8
  assert hash(int8) == hash(training.TrainConfig.from_dict(int8.to_dict()))  # jit cache key
  rev = dict(model=dict(reversible=True))
  carry = training.default_config("digits", "sideways", quick=True, stash="carry", **rev)
  assert carry.model.reversible and carry.to_dict()["model"]["reversible"] is True
  assert training.Trainer(carry).graph.reversible_units == (2,)
  assert "reversible" not in plain.to_dict()["model"]  # old run keys stay valid
  for bad, match in (
    (dict(stash="carry"), "not reversible"),
    (dict(stash=Stash("full", dtype="fp8")), "dtype must be one of"),
    (dict(stash={"depths": 2, "bits": 8}), "depths and dtype"),
    (dict(stash=[6, 0]), "r_1 = 4"),
  ):
    with pytest.raises(ValueError, match=match):
      training.default_config("digits", "sideways", quick=True, **bad)
  with pytest.raises(ValueError, match="needs a chain scheme"):
    training.default_config("digits", "skip_sideways", quick=True, **rev)


def test_carry_down_trains_like_the_exact_twin():
  """On the reversible chain, carry-down is the exact twin's gradient (§5): a few SGD steps of
  each from one seed end at the same parameters to float32 rounding (Adam would turn the
  rounding noise of a gradient that is zero in exact arithmetic, e.g. a bias before a norm,
  into a full step)."""
  rev = dict(model=dict(reversible=True), steps=3, optimizer="sgd", learning_rate=0.1)
  carry = training.Trainer(
    training.default_config("digits", "sideways", quick=True, stash="carry", **rev)
  )
  exact = training.Trainer(training.default_config("digits", "sideways_exact", quick=True, **rev))
  out = []
  for tr in (carry, exact):
    params, opt = tr.init()
    for step in range(3):
      params, opt, _ = tr.train_step(params, opt, step)
    out.append(params)
  for a, b in zip(jax.tree_util.tree_leaves(out[0]), jax.tree_util.tree_leaves(out[1])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
