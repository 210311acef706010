"""The categorical sampler against an exact denoiser for data given as an explicit joint table.

For data ``P(x0)`` over ``D`` categorical positions, ``p(x0 | x_t) ∝ P(x0) Π_d Q̄_t[x0_d, x_t,d]``;
enumerating the ``K^D`` clean sequences gives the exact clean-class probabilities per position,
so the sampler can be checked against the true distribution with no training.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from torch import nn

from polydiff.discrete import (
    AbsorbingTransitions,
    CategoricalStep,
    MarginalTransitions,
    UniformTransitions,
    sample_categorical,
)


class ExactDenoiser(nn.Module):
    """Exact ``p(x0_d | x_t)`` for one joint table per label; label -1 or ``cond=None`` is the
    unconditional model, whose table is the mean of the labelled ones.

    Shapes:
        tables: ``(L, K, ..., K)`` with ``D`` class dimensions; x: ``(B, D)``; returns ``(B, D, K)``.
    """

    def __init__(self, schedule, tables: torch.Tensor):
        super().__init__()
        self.schedule = schedule
        self.k, self.d = tables.shape[1], tables.ndim - 1
        self.seqs = torch.tensor(list(itertools.product(range(self.k), repeat=self.d)))
        flat = tables.reshape(tables.shape[0], -1).double()
        self.tables = torch.cat([flat, flat.mean(0, keepdim=True)])  # the last row is unconditional
        self.calls: list[str] = []

    def forward(self, x, t, cond):
        b = x.shape[0]
        labels = torch.full((b,), -1) if cond is None else cond
        self.calls.append("none" if cond is None else "uncond" if (labels == -1).all() else "cond")
        q_bar = self.schedule.cumulative_transition(t)  # (B, K, K), a per-sample time
        # column[b, d, k] = q(x_t,d | x0_d = k)
        column = q_bar.transpose(1, 2).gather(1, x.unsqueeze(-1).expand(b, self.d, self.k))
        likelihood = column[:, torch.arange(self.d), self.seqs].prod(-1)  # (B, K^D)
        posterior = self.tables[labels] * likelihood
        posterior = posterior / posterior.sum(-1, keepdim=True)
        return torch.einsum("bm,mdk->bdk", posterior, nn.functional.one_hot(self.seqs, self.k).double())


class ExactDenoiserWithDropCond(ExactDenoiser):
    def drop_cond(self, cond, mask):
        return cond.masked_fill(mask, -1)


def grid(steps: int) -> torch.Tensor:
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)


def total_variation(samples: torch.Tensor, table: torch.Tensor) -> float:
    k, d = table.shape[0], samples.shape[1]
    index = (samples * k ** torch.arange(d - 1, -1, -1)).sum(-1)  # itertools.product order
    freq = torch.bincount(index, minlength=k**d).double() / samples.shape[0]
    return 0.5 * (freq - table.reshape(-1).double()).abs().sum().item()


def sample_table(schedule, tables, n, steps, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = schedule.prior_sample((n, tables.ndim - 1), generator=g)
    return sample_categorical(ExactDenoiser(schedule, tables), schedule, x, grid(steps), generator=g)


# One variable, K = 4, class 1 impossible in the data; the marginal limit never produces class 3,
# and the absorbing schedule's mask is the data's empty class.
TABLE_1D = torch.tensor([0.5, 0.0, 0.2, 0.3], dtype=torch.float64)
SCHEDULES_1D = {
    "uniform": UniformTransitions(4),
    "marginal": MarginalTransitions([0.3, 0.3, 0.4, 0.0]),
    "absorbing": AbsorbingTransitions(4, mask_index=1),
}

# Two strongly correlated variables, K = 3 (the absorbing schedule adds a mask class 3).
TABLE_2D = torch.full((3, 3), 0.1 / 6, dtype=torch.float64).fill_diagonal_(0.3)
TABLE_2D_MASKED = torch.nn.functional.pad(TABLE_2D, (0, 1, 0, 1))
SCHEDULES_2D = {
    "uniform": (UniformTransitions(3), TABLE_2D),
    "marginal": (MarginalTransitions([0.6, 0.3, 0.1]), TABLE_2D),
    "absorbing": (AbsorbingTransitions(4, mask_index=3), TABLE_2D_MASKED),
}


@pytest.mark.parametrize("name", list(SCHEDULES_1D))
def test_one_variable_is_sampled_exactly_in_five_steps(name):
    """For one variable the posterior over x_s is exact, so only sampling noise remains:
    the expected TV distance of 20k draws over 3 live classes is about 0.004."""
    schedule = SCHEDULES_1D[name]
    samples = sample_table(schedule, TABLE_1D[None], n=20_000, steps=5)
    assert (samples != 1).all(), "a class of probability zero was sampled"
    assert total_variation(samples, TABLE_1D) < 0.02


@pytest.mark.parametrize("name", list(SCHEDULES_2D))
def test_two_variables_error_falls_with_the_number_of_steps(name):
    """Positions are drawn independently given x_t, so correlation is lost when both change in
    the same step; the error shrinks as steps get finer. The sampler's exact laws (enumerated)
    are 0.28-0.39, 0.06-0.07 and 0.006 away from the table; sampling noise of 10k draws is ~0.01."""
    schedule, table = SCHEDULES_2D[name]
    errors = {n: total_variation(sample_table(schedule, table[None], 10_000, n), table) for n in (2, 10, 100)}
    assert errors[2] > 0.2, errors  # the test can tell a coarse sampler from a fine one
    assert errors[2] > errors[10] + 0.1, errors
    assert errors[10] > errors[100] + 0.03, errors
    assert errors[100] < 0.03, errors


# --- classifier-free guidance -----------------------------------------------------------------

TABLES_COND = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=torch.float64)  # label 0, label 1
TABLE_UNCOND = TABLES_COND.mean(0)
LABELS = torch.arange(2).repeat_interleave(10_000)


def guided(denoiser, guidance, steps=5):
    schedule = denoiser.schedule
    g = torch.Generator().manual_seed(0)
    x = schedule.prior_sample((LABELS.numel(), 1), generator=g)
    return sample_categorical(denoiser, schedule, x, grid(steps), cond=LABELS, guidance=guidance, generator=g)


def test_guidance_one_is_the_conditional_and_skips_the_unconditional_branch():
    denoiser = ExactDenoiserWithDropCond(UniformTransitions(3), TABLES_COND)
    samples = guided(denoiser, guidance=1.0)
    assert total_variation(samples[LABELS == 0], TABLES_COND[0]) < 0.025
    assert total_variation(samples[LABELS == 1], TABLES_COND[1]) < 0.025
    assert denoiser.calls == ["cond"] * 5


@pytest.mark.parametrize("cls, null_call", [(ExactDenoiserWithDropCond, "uncond"), (ExactDenoiser, "none")])
def test_guidance_zero_is_the_unconditional(cls, null_call):
    denoiser = cls(UniformTransitions(3), TABLES_COND)
    samples = guided(denoiser, guidance=0.0)
    assert total_variation(samples, TABLE_UNCOND) < 0.02
    # without drop_cond the unconditional branch is called with cond=None
    assert denoiser.calls == ["cond", null_call] * 5


def test_guidance_combines_log_probabilities():
    """One step from t = 1 (x_1 carries no information) samples the guided prediction itself:
    p ∝ p_u^(1-w) p_c^w, here with w = 2."""
    samples = guided(ExactDenoiserWithDropCond(UniformTransitions(3), TABLES_COND), guidance=2.0, steps=1)
    for label in (0, 1):
        expected = TABLES_COND[label] ** 2 / TABLE_UNCOND
        assert total_variation(samples[LABELS == label], expected / expected.sum()) < 0.025


def test_guidance_acts_on_the_reverse_step():
    """Mid-way, the guided step is q_u^(1-w) q_c^w of the two posteriors p(x_s | x_t) (Graph DiT).
    Guiding the clean-class prediction instead would give [0.30, 0.09, 0.61] here, 0.26 away."""
    schedule, w, t, s = UniformTransitions(3), 3.0, 0.6, 0.5
    denoiser = ExactDenoiserWithDropCond(schedule, TABLES_COND)
    x_t = torch.full((20_000, 1), 2)
    cond = torch.zeros(20_000, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    grid_ts = torch.tensor([t, s])
    samples = sample_categorical(denoiser, schedule, x_t, grid_ts, cond=cond, guidance=w, generator=g)
    one = (x_t[:1], torch.tensor([t]))
    q_c = schedule.posterior_probs(x_t[:1], denoiser(*one, cond[:1]), t, s)[0, 0]
    q_u = schedule.posterior_probs(x_t[:1], denoiser(*one, None), t, s)[0, 0]
    expected = q_u ** (1 - w) * q_c**w
    assert total_variation(samples, expected / expected.sum()) < 0.02


# --- reproducibility -------------------------------------------------------------------------------


def test_seeded_generators_give_bit_identical_samples():
    schedule, table = SCHEDULES_2D["uniform"]
    torch.manual_seed(0)  # the global generator must play no part
    first = sample_table(schedule, table[None], n=500, steps=10, seed=7)
    torch.manual_seed(1)
    second = sample_table(schedule, table[None], n=500, steps=10, seed=7)
    other = sample_table(schedule, table[None], n=500, steps=10, seed=8)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_the_start_state_is_not_modified():
    schedule = UniformTransitions(3)
    x = schedule.prior_sample((50, 2), generator=torch.Generator().manual_seed(0))
    before = x.clone()
    denoiser = ExactDenoiser(schedule, TABLE_2D[None])
    sample_categorical(denoiser, schedule, x, grid(3), generator=torch.Generator())
    assert torch.equal(x, before)


# --- tuple states, constraints and callbacks -----------------------------------------------------------


class GraphDenoiser(nn.Module):
    """Fixed, non-symmetric clean-class probabilities for nodes (B, N) and edges (B, N, N)."""

    def __init__(self, n: int = 5):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.register_buffer("node_logits", torch.randn(n, 3, generator=g))
        self.register_buffer("edge_logits", 2 * torch.randn(n, n, 2, generator=g))

    def forward(self, x, t, cond):
        nodes, edges = x
        b = nodes.shape[0]
        return (
            self.node_logits.softmax(-1).expand(b, -1, -1),
            self.edge_logits.softmax(-1).expand(b, -1, -1, -1),
        )


def sample_graph(**kwargs):
    schedules = (UniformTransitions(3), MarginalTransitions([0.8, 0.2]))
    g = torch.Generator().manual_seed(0)
    x = (schedules[0].prior_sample((4, 5), generator=g), schedules[1].prior_sample((4, 5, 5), generator=g))
    return sample_categorical(GraphDenoiser(), schedules, x, grid(6), generator=g, **kwargs)


def symmetrise(state):
    nodes, edges = state
    upper = torch.triu(edges, diagonal=1)
    return nodes, upper + upper.transpose(1, 2)


def test_tuple_state_with_symmetric_edges():
    seen_symmetric = []

    def record(step):
        if step.index > 0:
            seen_symmetric.append(torch.equal(step.x[1], step.x[1].transpose(1, 2)))

    nodes, edges = sample_graph(constrain=symmetrise, callback=record)
    assert nodes.shape == (4, 5) and edges.shape == (4, 5, 5)
    assert torch.equal(edges, edges.transpose(1, 2))
    assert (torch.diagonal(edges, dim1=1, dim2=2) == 0).all()
    assert seen_symmetric == [True] * 5  # the denoiser saw the constrained state at every later step
    _, unconstrained = sample_graph()
    assert not torch.equal(unconstrained, unconstrained.transpose(1, 2))


def test_callback_sees_every_step_and_may_replace_the_prediction():
    schedule = UniformTransitions(3)
    steps = []

    def force_class_two(step):
        steps.append(step)
        return torch.nn.functional.one_hot(torch.full_like(step.x, 2), 3).double()

    x = schedule.prior_sample((64, 2), generator=torch.Generator().manual_seed(0))
    denoiser = ExactDenoiser(schedule, TABLE_2D[None])
    out = sample_categorical(denoiser, schedule, x, grid(4), callback=force_class_two)
    assert (out == 2).all()
    assert [s.index for s in steps] == [0, 1, 2, 3]
    assert [s.t for s in steps] == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert [s.t_next for s in steps] == pytest.approx([0.75, 0.5, 0.25, 0.0])
    assert steps[0].probs.shape == (64, 2, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        steps[0].index = 3
    assert isinstance(steps[0], CategoricalStep)


# --- bad input -------------------------------------------------------------------------------------------


class BadDenoiser(nn.Module):
    def __init__(self, fault: str):
        super().__init__()
        self.fault = fault

    def forward(self, x, t, cond):
        p = torch.full((*x.shape, 3), 1 / 3)
        if self.fault == "shape":
            return p[..., :2]
        if self.fault == "negative":
            p[0, 0] = torch.tensor([1.5, -0.5, 0.0])
        if self.fault == "nan":
            p[0, 0, 1] = float("nan")
        if self.fault == "zero":
            p[0, 0] = 0.0
        return p


@pytest.mark.parametrize(
    "fault, match",
    [
        ("shape", r"step 0 \(t=1\).*expected probabilities of shape \(2, 2, 3\), got \(2, 2, 2\)"),
        ("negative", r"step 0 \(t=1\).*negative"),
        ("nan", r"step 0 \(t=1\).*non-finite"),
        ("zero", r"step 0 \(t=1\).*sum to zero"),
    ],
)
def test_bad_probabilities_are_named(fault, match):
    schedule = UniformTransitions(3)
    with pytest.raises(ValueError, match=match):
        sample_categorical(BadDenoiser(fault), schedule, torch.zeros(2, 2, dtype=torch.long), grid(2))


def test_bad_calls_are_named():
    schedule = UniformTransitions(3)
    x = torch.zeros(2, 2, dtype=torch.long)
    good = BadDenoiser("none")
    with pytest.raises(ValueError, match="tuples of the same length"):
        sample_categorical(good, (schedule, schedule), x, grid(2))
    with pytest.raises(ValueError, match="decrease"):
        sample_categorical(good, schedule, x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        sample_categorical(good, schedule, x + 3, grid(2))
    with pytest.raises(ValueError, match="callback at step 1"):
        sample_categorical(good, schedule, x, grid(2), callback=lambda s: None if s.index == 0 else -s.probs)
    with pytest.raises(ValueError, match="constrain at step 0.*shape"):
        sample_categorical(good, schedule, x, grid(2), constrain=lambda state: state[:1])


def test_limits_callback_sets_each_steps_posterior_limits():
    """Under a per-element limit on class 2, a state in class 0 at t = 0.5 can only have come from a
    clean 0 (a redraw would give 2), so the step to t = 0 keeps it whatever the (unsure)
    prediction says; under the schedule's own uniform limit every clean class is consistent and
    the step draws the prediction itself. ``None`` keeps the schedule's limit."""
    schedule = UniformTransitions(3)

    class Unsure(nn.Module):
        def forward(self, x, t, cond):
            if isinstance(x, tuple):
                return tuple(torch.full((*c.shape, 3), 1.0 / 3, dtype=torch.float64) for c in x)
            return torch.full((*x.shape, 3), 1.0 / 3, dtype=torch.float64)

    seen = []

    def limits(state, probs):
        seen.append(tuple(probs.shape))
        return torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)

    start = torch.zeros(3000, 1, dtype=torch.long)
    half = torch.tensor([0.5, 0.0], dtype=torch.float64)
    toward = sample_categorical(Unsure(), schedule, start, half, generator=torch.Generator().manual_seed(1),
                                limits=limits)
    plain = sample_categorical(Unsure(), schedule, start, half, generator=torch.Generator().manual_seed(1),
                               limits=lambda state, probs: None)
    assert seen == [(3000, 1, 3)]
    assert (toward == 0).all()
    assert abs((plain == 0).double().mean().item() - 1 / 3) < 0.03
    with pytest.raises(ValueError, match="limits at step 0"):
        sample_categorical(Unsure(), (schedule, schedule), (start, start), grid(2),
                           limits=lambda state, probs: (None,))
