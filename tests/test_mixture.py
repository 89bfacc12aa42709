"""α on the simplex: projection, projected / exponentiated-gradient steps, history and checkpoints."""

from __future__ import annotations

import io
import itertools

import pytest
import torch

from tandem_components.errors import TandemError
from tandem_components.mixture.state import MixtureState, project_to_capped_simplex, project_to_simplex

DOMAINS = ["arxiv", "books", "c4", "github"]


def _brute_force_projection(v: torch.Tensor, min_weight: float) -> torch.Tensor:
    """Exact QP min ||a - v||^2 s.t. a >= mw, sum a = 1, by enumerating the set S of free coordinates.

    For a given S, KKT gives a_i = v_i - θ on S and a_i = mw off S, θ fixed by the sum. The optimum is the
    feasible candidate (a_i >= mw on S) of smallest distance.
    """
    v = v.to(torch.float64)
    m = v.numel()
    best, best_dist = None, float("inf")
    for size in range(1, m + 1):
        for free in itertools.combinations(range(m), size):
            idx = torch.tensor(free)
            a = torch.full((m,), min_weight, dtype=torch.float64)
            theta = (v[idx].sum() - (1.0 - (m - size) * min_weight)) / size
            a[idx] = v[idx] - theta
            if bool((a >= min_weight - 1e-12).all()):
                d = float(((a - v) ** 2).sum())
                if d < best_dist:
                    best, best_dist = a, d
    return best


def test_projection_on_simplex_and_idempotent():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        m = int(torch.randint(1, 9, (1,), generator=g))
        v = torch.randn(m, generator=g, dtype=torch.float64) * 3
        a = project_to_simplex(v)
        assert a.dtype == torch.float64
        assert abs(float(a.sum()) - 1.0) < 1e-12
        assert bool((a >= 0).all())
        assert torch.allclose(project_to_simplex(a), a, atol=1e-15, rtol=0)


def test_projection_equals_brute_force_qp():
    g = torch.Generator().manual_seed(1)
    for trial in range(150):
        m = int(torch.randint(2, 6, (1,), generator=g))
        v = torch.randn(m, generator=g, dtype=torch.float64) * 2
        mw = [0.0, 0.05, 1.0 / (2 * m)][trial % 3]
        got = project_to_simplex(v, mw)
        want = _brute_force_projection(v, mw)
        assert torch.allclose(got, want, atol=1e-12, rtol=0), (v, mw, got, want)


def test_projection_batched_rows_and_shift_invariance():
    g = torch.Generator().manual_seed(2)
    v = torch.randn(7, 5, generator=g, dtype=torch.float64)
    rows = project_to_simplex(v, 0.02)
    for i in range(7):
        assert torch.allclose(rows[i], project_to_simplex(v[i], 0.02), atol=1e-15, rtol=0)
    # a constant added to every entry does not change the projection (METHOD.md: only differences of Δ matter)
    assert torch.allclose(project_to_simplex(v[0] + 3.7), project_to_simplex(v[0]), atol=1e-12, rtol=0)


def test_projection_min_weight_floor_and_limits():
    v = torch.tensor([10.0, 0.0, -5.0, -5.0], dtype=torch.float64)
    a = project_to_simplex(v, 0.1)
    assert bool((a >= 0.1 - 1e-15).all()) and abs(float(a.sum()) - 1) < 1e-12
    assert torch.allclose(a, torch.tensor([0.7, 0.1, 0.1, 0.1], dtype=torch.float64), atol=1e-12, rtol=0)
    assert torch.allclose(project_to_simplex(v, 0.25), torch.full((4,), 0.25, dtype=torch.float64))
    with pytest.raises(TandemError, match="min_weight"):
        project_to_simplex(v, 0.3)
    with pytest.raises(TandemError, match="min_weight"):
        project_to_simplex(v, -0.1)
    with pytest.raises(TandemError):
        project_to_simplex(torch.tensor([1.0, float("nan")]))


def test_projected_step_sign_larger_delta_loses_weight():
    mix = MixtureState(DOMAINS, lr=0.1)
    delta = torch.tensor([0.3, -0.1, 0.0, 0.05])
    new = mix.step(delta)
    alpha0 = torch.full((4,), 0.25, dtype=torch.float64)
    assert new[0] < alpha0[0] and new[1] > alpha0[1]
    # order of the change follows -Δ
    assert torch.equal(torch.argsort(new - alpha0), torch.argsort(-delta.double()))
    # exact value: interior point, projection = subtract the mean step
    want = alpha0 - 0.1 * (delta.double() - delta.double().mean())
    assert torch.allclose(new, want, atol=1e-15, rtol=0)
    assert abs(float(new.sum()) - 1) < 1e-12


def test_exponentiated_gradient_step_stays_on_simplex():
    mix = MixtureState(DOMAINS, update="exponentiated_gradient", lr=2.0, min_weight=0.01)
    g = torch.Generator().manual_seed(3)
    for _ in range(50):
        d = torch.randn(4, generator=g, dtype=torch.float64) * 5
        a = mix.step(d)
        assert abs(float(a.sum()) - 1) < 1e-12
        assert bool((a >= 0.01 - 1e-15).all())
    mix = MixtureState(DOMAINS, update="exponentiated_gradient", lr=1.0)
    delta = torch.tensor([1.0, 0.0, 0.0, -1.0], dtype=torch.float64)
    a = mix.step(delta)
    want = torch.exp(-delta) / torch.exp(-delta).sum()
    assert torch.allclose(a, want, atol=1e-15, rtol=0)
    assert a[0] < 0.25 < a[3]


def test_smoothing_and_floor_after_step():
    mix = MixtureState(DOMAINS, lr=10.0, smoothing=0.1)
    a = mix.step(torch.tensor([5.0, 0.0, 0.0, 0.0]))
    # without smoothing arxiv would be at 0; smoothing puts eps/M back
    assert abs(float(a[0]) - 0.1 / 4) < 1e-15
    assert abs(float(a.sum()) - 1) < 1e-12
    mix = MixtureState(DOMAINS, lr=10.0, min_weight=0.05)
    a = mix.step(torch.tensor([5.0, 0.0, 0.0, 0.0]))
    assert abs(float(a[0]) - 0.05) < 1e-15


def test_bad_delta_and_arguments_rejected():
    mix = MixtureState(DOMAINS)
    nan, inf = torch.tensor([float("nan"), 0, 0, 0]), torch.tensor([float("inf"), 0, 0, 0])
    for bad in (nan, inf, torch.zeros(3), torch.zeros(2, 2)):
        with pytest.raises(TandemError, match="delta"):
            mix.step(bad)
    assert mix.num_updates == 0 and len(mix.history) == 1
    with pytest.raises(TandemError, match="update"):
        MixtureState(DOMAINS, update="adam")
    with pytest.raises(TandemError, match="lr"):
        MixtureState(DOMAINS, lr=0)
    with pytest.raises(TandemError, match="min_weight"):
        MixtureState(DOMAINS, min_weight=0.3)
    with pytest.raises(TandemError, match="smoothing"):
        MixtureState(DOMAINS, smoothing=1.0)
    with pytest.raises(TandemError, match="initial"):
        MixtureState(DOMAINS, initial=[0.5, 0.5, 0.5, 0.5])
    with pytest.raises(TandemError, match="initial"):
        MixtureState(DOMAINS, initial=[0.5, 0.5])
    with pytest.raises(TandemError, match="initial"):
        MixtureState(DOMAINS, initial=[1.0, 0.0, 0.0, 0.0], min_weight=0.1)
    with pytest.raises(TandemError, match="domains"):
        MixtureState(["a", "a"])
    with pytest.raises(TandemError, match="domains"):
        MixtureState([])


def test_history_average_and_last():
    mix = MixtureState(DOMAINS, initial=[0.4, 0.3, 0.2, 0.1], lr=0.05)
    assert torch.equal(mix.average(), mix.last())
    deltas = [torch.tensor(d) for d in ([0.1, 0.0, -0.1, 0.2], [-0.3, 0.1, 0.0, 0.0], [0.0, 0.0, 0.5, -0.5])]
    for d in deltas:
        mix.step(d)
    assert mix.num_updates == 3 and len(mix.history) == 4 and len(mix.deltas) == 3
    assert torch.equal(mix.history[0], torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64))
    assert torch.equal(mix.last(), mix.history[-1]) and torch.equal(mix.weights, mix.last())
    avg = mix.average()
    assert torch.allclose(avg, sum(mix.history) / 4, atol=1e-15, rtol=0)
    assert not torch.allclose(avg, mix.last())
    assert abs(float(avg.sum()) - 1) < 1e-12
    d_last, d_avg = mix.as_dict("last"), mix.as_dict("average")
    assert list(d_last) == DOMAINS and d_avg["arxiv"] == float(avg[0])
    with pytest.raises(TandemError, match="which"):
        mix.as_dict("best")
    # returned tensors are copies: editing them does not change α
    w = mix.weights
    w[0] = 5.0
    assert mix.weights[0] != 5.0


def test_the_average_weighs_each_alpha_by_the_steps_trained_under_it():
    """Updates at steps 5 and 15 of a 20-step run: α_0 ran for 5 steps, α_1 for 10, α_2 for 5."""
    mix = MixtureState(DOMAINS, initial=[0.4, 0.3, 0.2, 0.1], lr=0.05)
    mix.step(torch.tensor([0.1, 0.0, -0.1, 0.2]), at_step=5)
    mix.step(torch.tensor([-0.3, 0.1, 0.0, 0.0]), at_step=15)
    a0, a1, a2 = mix.history
    assert torch.allclose(mix.average(end_step=20), (5 * a0 + 10 * a1 + 5 * a2) / 20, atol=1e-15, rtol=0)
    assert torch.allclose(mix.average(), (a0 + a1 + a2) / 3, atol=1e-15, rtol=0)  # no end: plain mean
    assert mix.as_dict("average", end_step=20)["arxiv"] == float(mix.average(end_step=20)[0])
    with pytest.raises(TandemError, match="step order"):
        mix.step(torch.zeros(4), at_step=3)
    untimed = MixtureState(DOMAINS, lr=0.05)  # steps not given: the plain mean, whatever end_step says
    untimed.step(torch.tensor([0.1, 0.0, -0.1, 0.2]))
    assert torch.equal(untimed.average(end_step=20), torch.stack(untimed.history).mean(dim=0))
    resumed = MixtureState(DOMAINS, initial=[0.4, 0.3, 0.2, 0.1], lr=0.05)
    resumed.load_state_dict(mix.state_dict())
    assert resumed.update_steps == [5, 15] and torch.equal(resumed.average(end_step=20), mix.average(end_step=20))


def test_the_tail_average_covers_the_last_fraction_of_the_steps():
    """Updates at steps 5 and 15 of a 20-step run, tail 0.5: steps 10-20 count, α_1 for 5 and α_2 for 5;
    tail 0.3: steps 14-20, α_1 for 1 and α_2 for 5. Without steps: the last ceil(f (n + 1)) α's."""
    mix = MixtureState(DOMAINS, initial=[0.4, 0.3, 0.2, 0.1], lr=0.05, average_tail=0.5)
    mix.step(torch.tensor([0.1, 0.0, -0.1, 0.2]), at_step=5)
    mix.step(torch.tensor([-0.3, 0.1, 0.0, 0.0]), at_step=15)
    a0, a1, a2 = mix.history
    assert torch.allclose(mix.average(end_step=20), (a1 + a2) / 2, atol=1e-15, rtol=0)
    mix.average_tail = 0.3
    assert torch.allclose(mix.average(end_step=20), (1 * a1 + 5 * a2) / 6, atol=1e-15, rtol=0)
    assert torch.equal(mix.average(), a2)  # no steps: ceil(0.3 x 3) = 1 α
    mix.average_tail = 0.5
    assert torch.allclose(mix.average(), (a1 + a2) / 2, atol=1e-15, rtol=0)  # ceil(0.5 x 3) = 2 α's
    mix.average_tail = 1.0
    assert torch.allclose(mix.average(end_step=20), (5 * a0 + 10 * a1 + 5 * a2) / 20, atol=1e-15, rtol=0)
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(TandemError, match="average_tail"):
            MixtureState(DOMAINS, average_tail=bad)


def test_state_dict_round_trip_through_weights_only_load():
    g = torch.Generator().manual_seed(4)
    kwargs = dict(lr=0.3, update="exponentiated_gradient", min_weight=0.01, smoothing=1e-3)
    mix = MixtureState(DOMAINS, **kwargs)
    for _ in range(5):
        mix.step(torch.randn(4, generator=g))
    buf = io.BytesIO()
    torch.save(mix.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    resumed = MixtureState(DOMAINS, **kwargs)
    resumed.load_state_dict(sd)
    assert torch.equal(resumed.last(), mix.last()) and torch.equal(resumed.average(), mix.average())
    assert resumed.num_updates == 5
    for k, v in mix.state_dict().items():
        w = resumed.state_dict()[k]
        assert torch.equal(v, w) if isinstance(v, torch.Tensor) else v == w
    # continuing gives bit-identical α
    d = torch.randn(4, generator=g)
    assert torch.equal(mix.step(d), resumed.step(d))
    # fresh state (no updates) round-trips too
    fresh = MixtureState(DOMAINS)
    buf = io.BytesIO()
    torch.save(fresh.state_dict(), buf)
    buf.seek(0)
    other = MixtureState(DOMAINS)
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert other.num_updates == 0
    with pytest.raises(TandemError, match="domains"):
        MixtureState(["a", "b", "c", "d"]).load_state_dict(sd)


def _brute_force_capped_projection(v: torch.Tensor, low: float, high: torch.Tensor) -> torch.Tensor:
    """Exact QP min ||a - v||^2 s.t. low <= a <= high, sum a = 1: every coordinate at its floor, at its cap or
    free (a_i = v_i - θ, θ fixed by the sum); the feasible candidate of smallest distance."""
    m = v.numel()
    best, best_dist = None, float("inf")
    for states in itertools.product(("low", "high", "free"), repeat=m):
        a = torch.tensor([low if s == "low" else float(high[i]) if s == "high" else 0.0 for i, s in enumerate(states)],
                         dtype=torch.float64)
        free = torch.tensor([s == "free" for s in states])
        if bool(free.any()):
            theta = (v[free].sum() - (1.0 - a[~free].sum())) / free.sum()
            a[free] = v[free] - theta
        elif abs(float(a.sum()) - 1.0) > 1e-12:
            continue
        if bool((a >= low - 1e-12).all() and (a <= high + 1e-12).all()) and abs(float(a.sum()) - 1) < 1e-9:
            d = float(((a - v) ** 2).sum())
            if d < best_dist:
                best, best_dist = a, d
    return best


def test_capped_projection_is_the_exact_projection():
    """Against the brute-force QP on random points and random caps (each >= the floor, summing to >= 1)."""
    g = torch.Generator().manual_seed(7)
    for _ in range(40):
        v = torch.randn(4, generator=g, dtype=torch.float64)
        high = 0.05 + torch.rand(4, generator=g, dtype=torch.float64) * 0.6
        if float(high.sum()) < 1.0:
            high = high / high.sum() * 1.1
        got = project_to_capped_simplex(v, 0.02, high)
        assert torch.allclose(got, _brute_force_capped_projection(v, 0.02, high), atol=1e-10, rtol=0)
        assert abs(float(got.sum()) - 1.0) < 1e-12 and bool((got <= high + 1e-15).all() and (got >= 0.02).all())
        assert torch.allclose(project_to_capped_simplex(got, 0.02, high), got, atol=1e-15, rtol=0)  # idempotent
    # caps that do not bind: the plain floored projection
    v = torch.tensor([0.5, 0.2, -0.1, 0.3], dtype=torch.float64)
    assert torch.allclose(project_to_capped_simplex(v, 0.01, torch.ones(4, dtype=torch.float64)),
                          project_to_simplex(v, 0.01), atol=1e-15, rtol=0)


@pytest.mark.parametrize("update", ["projected_gradient", "exponentiated_gradient"])
def test_alpha_stays_under_its_caps(update):
    """A Δ that keeps asking for github: α_0 (uniform) is moved under the caps at once, and no update puts a
    domain above its cap; the capped weight goes to the others by the step, not to github."""
    caps = [0.5, 0.5, 0.5, 0.1]
    mix = MixtureState(DOMAINS, lr=0.5, update=update, min_weight=0.01, momentum=0.9, smoothing=1e-3,
                       max_weights=caps)
    assert torch.allclose(mix.weights, torch.tensor([0.3, 0.3, 0.3, 0.1], dtype=torch.float64), atol=1e-12)
    for _ in range(30):
        alpha = mix.step(torch.tensor([0.2, 0.0, 0.1, -1.0]))
        assert bool((alpha <= torch.tensor(caps, dtype=torch.float64) + 1e-12).all())
        assert abs(float(alpha.sum()) - 1.0) < 1e-12 and float(alpha.min()) >= 0.01 - 1e-12
    assert float(alpha[3]) == pytest.approx(0.1) and float(alpha[1]) > float(alpha[2]) > float(alpha[0])
    state = mix.state_dict()
    assert state["max_weights"].tolist() == caps
    with pytest.raises(TandemError, match="max_weights: the per-domain caps sum to 0.8"):
        MixtureState(DOMAINS, max_weights=[0.2, 0.2, 0.2, 0.2])


def test_the_repetition_price_charges_each_planned_epoch_past_the_first():
    """λ max(e_m - 1, 0), hand-computed: with Δ = 0 the price alone moves α toward equal planned epochs (the
    natural proportions), and leaves α there; at λ = 0 the step is the paper's, bit for bit."""
    counts = torch.tensor([400.0, 300.0, 200.0, 100.0], dtype=torch.float64)
    n = 5000.0  # the run's draw: 5 epochs of every domain at the natural proportions
    epw = n / counts
    mix = MixtureState(DOMAINS, lr=0.05, min_weight=0.01, repetition_price=0.1, epochs_per_weight=epw)
    term = mix.repetition_term()  # uniform α: 0.25 x (12.5, 16.67, 25, 50) epochs
    assert term.tolist() == pytest.approx([0.1 * (0.25 * e - 1.0) for e in epw.tolist()], abs=1e-12)
    for _ in range(200):
        alpha = mix.step(torch.zeros(4))
    assert alpha.tolist() == pytest.approx((counts / counts.sum()).tolist(), abs=1e-3)
    assert mix.last_price.tolist() == pytest.approx([0.4] * 4, abs=1e-3)  # 5 epochs each
    # below one epoch nothing is charged
    assert mix.repetition_term(torch.tensor([0.01, 0.01, 0.01, 0.97])).tolist()[:3] == [0.0, 0.0, 0.0]
    # off: the same α as a state without the option, bit for bit
    a, b = MixtureState(DOMAINS, lr=0.5, momentum=0.9), MixtureState(DOMAINS, lr=0.5, momentum=0.9,
                                                                 epochs_per_weight=epw)
    for d in ([0.1, -0.2, 0.0, 0.05], [0.0, 0.3, -0.1, 0.0]):
        assert torch.equal(a.step(torch.tensor(d)), b.step(torch.tensor(d)))
    with pytest.raises(TandemError, match="repetition_price: expected a number >= 0"):
        MixtureState(DOMAINS, repetition_price=-1.0, epochs_per_weight=epw)
    with pytest.raises(TandemError, match="repetition_price > 0 needs epochs_per_weight"):
        MixtureState(DOMAINS, repetition_price=0.1)
