import torch
import torch.nn.functional as F

from tandem_components.training.domain_loss import IGNORE_INDEX, domain_losses


def _loop_reference(logits, labels, domain_ids, m):
    """Per-domain mean CE computed the slow, obvious way: one domain at a time."""
    out = []
    for d in range(m):
        sel = domain_ids == d
        if not sel.any():
            out.append(float("nan"))
            continue
        lg, lb = logits[sel], labels[sel]
        out.append(float(F.cross_entropy(lg.reshape(-1, lg.shape[-1]), lb.reshape(-1), ignore_index=IGNORE_INDEX)))
    return torch.tensor(out, dtype=torch.float64)


def test_per_domain_loss_equals_per_domain_loop():
    g = torch.Generator().manual_seed(0)
    b, t, v, m = 12, 9, 31, 4
    logits = torch.randn(b, t, v, generator=g)
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[0, :3] = IGNORE_INDEX  # masked positions (SFT prompts) carry no loss
    domain_ids = torch.tensor([0, 1, 1, 2, 0, 0, 1, 2, 2, 0, 1, 0])  # domain 3 absent
    losses = domain_losses(logits, labels, domain_ids, m)
    expected = _loop_reference(logits, labels, domain_ids, m)
    got = losses.per_domain()
    assert torch.allclose(got[:3], expected[:3], atol=1e-5)
    assert torch.isnan(got[3]) and losses.counts[3] == 0
    overall = F.cross_entropy(logits.reshape(-1, v), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    assert torch.allclose(losses.mean, overall, atol=1e-6)
    assert int(losses.counts.sum()) == b * t - 3


def test_mean_is_differentiable_and_sums_are_detached():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    labels = torch.randint(0, 5, (2, 3))
    losses = domain_losses(logits, labels, torch.tensor([0, 1]), 2)
    losses.mean.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert not losses.sums.requires_grad
