"""The reference's step is paired with the proxy's: same learning rate, and (without the validation term)
the same step bit for bit, so Δ = 0 exactly. Both failed before the fix (METHOD.md, "The reference's step"):
lr_w was copied after the scheduler moved on (the reference stepped with lr_u of the *next* step), and
the validation and train gradients were clipped and AdamW-normalised together."""

from __future__ import annotations

import json

import pytest
import torch

from tests.recipe_runner import TINY, pretrain_recipe, run_in_process

STAGE1 = "configs/pretrain/tiny_stage1.yaml"


def _recipe(shards, out, *overrides):
    return pretrain_recipe(STAGE1, shards, out, *overrides)


def test_the_reference_steps_with_the_proxys_learning_rate_of_the_same_step(embedded_shards, tmp_path):
    """Warmup then cosine: lr_u changes at every step, so a one-step lag shows at every probe step."""
    recipe = _recipe(embedded_shards, tmp_path / "out", "max_steps=12", "lr_scheduler.warmup_steps=4",
                     "mixture.episode_len=4", "mixture.probe_steps=3")
    proxy_lrs, reference_lrs = [], []
    recipe.twins.proxy_optimizer.register_step_pre_hook(
        lambda opt, *_: proxy_lrs.append(opt.param_groups[0]["lr"]))
    recipe.twins.reference_optimizer.register_step_pre_hook(
        lambda opt, *_: reference_lrs.append((len(proxy_lrs), opt.param_groups[0]["lr"])))
    recipe.train()
    recipe.cleanup()
    assert len(reference_lrs) == 9 and len(proxy_lrs) == 12  # 3 episodes x K = 3 reference steps
    assert all(a != b for a, b in zip(proxy_lrs, proxy_lrs[1:]))  # so a one-step lag cannot pass
    assert [lr for _, lr in reference_lrs] == [proxy_lrs[step - 1] for step, _ in reference_lrs]
    assert reference_lrs[0] == (1, 0.0)  # warmup starts at lr 0: neither twin moves at step 1


@pytest.mark.parametrize("reference_step", ["split", "joint"])
def test_without_the_validation_term_the_twins_stay_identical_and_delta_is_exactly_zero(
    embedded_shards, tmp_path, monkeypatch, reference_step
):
    out = tmp_path / "out"
    assert 0 == run_in_process(
        "pretrain", STAGE1, *TINY, f"data.shards={embedded_shards}", f"output_dir={out}", "max_steps=12",
        "mixture.episode_len=4", "mixture.probe_steps=3", "mixture.validation_weight=0",
        f"mixture.reference_step={reference_step}", "clip_grad_norm=0.5", monkeypatch=monkeypatch,
    )
    rows = [json.loads(line) for line in (out / "mixture_trajectory.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert row["twin_distance"] == 0.0, row
        assert set(row["delta"].values()) == {0.0}, row
    uniform = 1 / len(rows[0]["alpha"])
    assert all(a == pytest.approx(uniform, abs=1e-12) for a in rows[-1]["alpha"].values())


def test_the_split_step_takes_the_proxys_train_step_plus_a_preconditioned_val_step(embedded_shards, tmp_path):
    """One probe step from synced twins: w − u equals −lr_w·(β/γ)·clamp(clip(g_val)/(sqrt(v̂)+eps), ±1), with v̂
    the AdamW second moment after the train step: the train part is exactly the proxy's."""
    recipe = _recipe(embedded_shards, tmp_path / "out", "max_steps=4", "lr_scheduler.warmup_steps=0",
                     "mixture.gamma=2.0", "mixture.validation_weight=0.5", "clip_grad_norm=0")
    twins, est = recipe.twins, recipe.estimator
    train_iter, val_iter = iter(recipe.train_loader), iter(recipe.val_loader)
    recipe._proxy_step(next(train_iter))  # a first step so that AdamW has a second moment
    est.begin_episode()
    batch, val_batch = next(train_iter), next(val_iter)
    before = [p.detach().clone() for p in twins.reference.parameters()]
    val = recipe.forward(twins.reference, val_batch, len(recipe.domains))
    g_val = torch.autograd.grad(val.mean, list(twins.reference.parameters()))
    recipe._proxy_step(batch)
    est.probe_step(batch, val_batch)
    lr = twins.reference_optimizer.param_groups[0]["lr"]
    eps, beta2 = twins.reference_optimizer.param_groups[0]["eps"], twins.reference_optimizer.param_groups[0]["betas"][1]
    for p_ref, p_prx, g, w0 in zip(twins.reference.parameters(), twins.proxy.parameters(), g_val, before):
        state = twins.reference_optimizer.state[p_ref]
        denom = (state["exp_avg_sq"] / (1 - beta2 ** float(state["step"]))).sqrt() + eps
        expected = p_prx.detach() - lr * (0.5 / 2.0) * (g / denom).clamp(-1.0, 1.0)
        assert torch.allclose(p_ref.detach(), expected, rtol=1e-5, atol=1e-7)
        assert not torch.equal(p_ref.detach(), w0)
    recipe.cleanup()


def test_reference_step_and_validation_weight_are_checked(embedded_shards, tmp_path, monkeypatch, capsys):
    for bad, key in (("mixture.reference_step=both", "mixture.reference_step"),
                     ("mixture.validation_weight=-1", "mixture.validation_weight")):
        code = run_in_process("pretrain", STAGE1, *TINY, f"data.shards={embedded_shards}",
                              f"output_dir={tmp_path / 'out'}", bad, monkeypatch=monkeypatch)
        assert code != 0
        assert key in capsys.readouterr().err
        assert not (tmp_path / "out").exists()


def test_the_val_part_of_the_split_step_by_hand():
    """The preconditioned val step on one 3-coordinate parameter, with the numbers worked out by hand:
    lr_w = 0.01, β/γ = 0.25, AdamW's v̂ = 0.04 everywhere (sqrt 0.2), g_val = (0.1, -0.02, 1.0):
    g/sqrt(v̂) = (0.5, -0.1, 5 -> clamped to 1), step = -0.01 * 0.25 * that = (-0.00125, 0.00025, -0.0025)."""
    from tandem_components.estimators import TandemEstimator
    from tandem_components.training.twins import build_twins

    twins = build_twins(lambda: torch.nn.Linear(3, 1, bias=False),
                        lambda ps: torch.optim.AdamW(ps, lr=0.01, betas=(0.9, 0.95), eps=0.0),
                        lambda ps: torch.optim.AdamW(ps, lr=0.01, betas=(0.9, 0.95), eps=0.0))
    est = TandemEstimator(twins, num_domains=1, gamma=2.0, validation_weight=0.5)
    (p,) = twins.reference.parameters()
    with torch.no_grad():
        p.copy_(torch.tensor([[1.0, 2.0, 3.0]]))
    # AdamW's state after one step (bias correction 1 - 0.95 = 0.05): exp_avg_sq = 0.04 * 0.05 = 0.002
    twins.reference_optimizer.state[p] = {"step": torch.tensor(1.0), "exp_avg": torch.zeros(1, 3),
                                          "exp_avg_sq": torch.full((1, 3), 0.002)}
    est._preconditioned_step([torch.tensor([[0.1, -0.02, 1.0]])], scale=0.5 / 2.0)
    assert p.detach()[0].tolist() == pytest.approx([1.0 - 0.00125, 2.0 + 0.00025, 3.0 - 0.0025], abs=5e-7)  # float32
