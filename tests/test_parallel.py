"""Speed and scale settings of ``prepare_model`` on one CPU process, and the chunked per-domain loss.

Tolerances (losses over 5 AdamW steps on learnable data, the loss falling 4.4 -> 1.5, relative to the
fp32 eager run; measured maximum relative difference in brackets):
- torch.compile: rtol 1e-4. Inductor fuses and reorders float32 reductions; nothing else changes.
- activation checkpointing: rtol 1e-6 [0]. The same ops are recomputed, in the same order.
- bf16 parameters: rtol 3e-2 [7.7e-3]. bf16 keeps 8 mantissa bits; parameters, AdamW state and the
  update itself are rounded to them every step, so the gap grows with the number of steps.
- float8 (emulated on CPU, fp32 parameters): rtol 3e-2 [1.4e-3]. e4m3 keeps 3 mantissa bits (up to 6%
  per element), but dynamic tensor-wise scales and matmul sums over 32-256 terms average it out.
- float8 with bf16 parameters: rtol 5e-2 [9.1e-3]: both of the above.
- chunked cross-entropy vs full logits: 1e-5 on per-domain means, 1e-6 relative on sums.
"""

import functools

import pytest
import torch

from tandem_components.data.loader import Batch
from tandem_components.distributed.parallel import (
    float8_module_filter,
    full_state_dict,
    init_distributed_if_launched,
    prepare_model,
)
from tandem_components.training.chunked_loss import (
    chunked_domain_losses,
    domain_losses_from_chunks,
    model_chunked_domain_losses,
)
from tandem_components.training.domain_loss import IGNORE_INDEX, domain_losses, model_domain_losses
from tests.helpers import patterned_tokens, tiny_decoder

VOCAB, SEQ, BATCH, STEPS = 64, 16, 4, 5


def _batches(n: int = STEPS, seed: int = 0) -> list[Batch]:
    """Learnable windows (3 periodic patterns, one per domain) so that the losses fall step by step."""
    g = torch.Generator().manual_seed(seed)
    streams = [torch.from_numpy(patterned_tokens(p, 10 * d, 2000).astype("int64")) for d, p in enumerate((5, 7, 11))]
    domain_ids = torch.tensor([0, 1, 2, 1])
    out = []
    for _ in range(n):
        starts = torch.randint(0, 2000 - SEQ - 1, (BATCH,), generator=g)
        window = torch.stack([streams[d][s : s + SEQ + 1] for d, s in zip(domain_ids.tolist(), starts.tolist())])
        out.append(Batch(window[:, :-1], window[:, 1:].clone(), domain_ids))
    return out


def _train_losses(**settings) -> list[float]:
    model = prepare_model(tiny_decoder(VOCAB), **settings)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for batch in _batches():
        loss = model_domain_losses(model, batch, 3).mean
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return losses


@functools.cache
def _eager_fp32() -> tuple[float, ...]:
    return tuple(_train_losses())


def _assert_close(got, want, rtol):
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), rtol=rtol, atol=0)


# ------------------------------------------------------------------------------------ prepare_model
@pytest.mark.slow
def test_compiled_layers_train_like_eager():
    model = prepare_model(tiny_decoder(VOCAB), compile=True)
    assert all(getattr(layer, "_compiled_call_impl", None) is not None for layer in model.layers)
    _assert_close(_train_losses(compile=True), _eager_fp32(), rtol=1e-4)


def test_activation_checkpointing_trains_like_eager_and_keeps_state_dict_keys():
    plain_keys = sorted(tiny_decoder(VOCAB).state_dict())
    model = prepare_model(tiny_decoder(VOCAB), activation_checkpointing=True)
    assert "CheckpointWrapper" in type(model.layers[0]).__name__
    assert sorted(full_state_dict(model)) == plain_keys  # saved checkpoints load into a plain decoder
    _assert_close(_train_losses(activation_checkpointing=True), _eager_fp32(), rtol=1e-6)


def test_bf16_parameters_train_close_to_fp32():
    model = prepare_model(tiny_decoder(VOCAB), dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    losses = _train_losses(dtype=torch.bfloat16)
    _assert_close(losses, _eager_fp32(), rtol=3e-2)
    assert losses[-1] < 0.5 * losses[0]


def test_float8_converts_eligible_linears_and_trains_close_to_fp32():
    model = prepare_model(tiny_decoder(VOCAB), float8=True)
    converted = {name for name, m in model.named_modules() if type(m).__name__ == "Float8Linear"}
    assert "output" not in converted  # logits stay in high precision
    assert {"layers.0.attn.q_proj", "layers.0.mlp.w1", "layers.0.mlp.w2"} <= converted
    assert sorted(full_state_dict(model)) == sorted(tiny_decoder(VOCAB).state_dict())
    losses = _train_losses(float8=True)
    _assert_close(losses, _eager_fp32(), rtol=3e-2)
    assert losses[-1] < 0.5 * losses[0]
    bf16_float8 = _train_losses(float8=True, dtype=torch.bfloat16)  # the combination used on GPUs
    _assert_close(bf16_float8, _eager_fp32(), rtol=5e-2)


def test_float8_filter_skips_output_and_dims_not_divisible_by_16():
    assert not float8_module_filter(torch.nn.Linear(32, 64), "output")
    assert not float8_module_filter(torch.nn.Linear(32, 24), "layers.0.mlp.w1")
    assert float8_module_filter(torch.nn.Linear(32, 48), "layers.0.mlp.w1")


def test_single_process_is_not_distributed_and_offload_needs_fsdp(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed_if_launched("cpu") is False
    with pytest.raises(ValueError, match="cpu_offload"):
        prepare_model(tiny_decoder(VOCAB), cpu_offload=True)


# ------------------------------------------------------------------------------------- chunked loss
def _mixed_batch(seq: int = 15) -> Batch:
    """T not divisible by the chunk count, ignored targets, and domain 3 of 4 absent."""
    g = torch.Generator().manual_seed(1)
    window = torch.randint(0, VOCAB, (5, seq + 1), generator=g)
    labels = window[:, 1:].clone()
    labels[0, :6] = IGNORE_INDEX  # e.g. an SFT prompt
    labels[2, :] = IGNORE_INDEX  # a sample with no target at all
    return Batch(window[:, :-1], labels, torch.tensor([0, 1, 2, 0, 1]))


def _assert_same_losses(got, want):
    torch.testing.assert_close(got.mean, want.mean, rtol=0, atol=1e-5)
    assert torch.equal(got.counts, want.counts)
    torch.testing.assert_close(got.sums, want.sums, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(got.per_domain(), want.per_domain(), rtol=0, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("num_chunks", [1, 4, 15])
def test_chunked_loss_equals_full_loss_and_its_gradients(num_chunks):
    batch = _mixed_batch()
    model = tiny_decoder(VOCAB)
    full = model_domain_losses(model, batch, 4)
    full.mean.backward()
    want_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)

    chunked = model_chunked_domain_losses(model, batch, 4, num_chunks=num_chunks)
    _assert_same_losses(chunked, full)
    assert torch.isnan(chunked.per_domain()[3])  # absent domain: NaN, as domain_losses says
    chunked.mean.backward()
    for p, g in zip(model.parameters(), want_grads, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6)
    assert "chunked_output" not in vars(model) and model.num_output_chunks == 0  # hook removed after the call


def test_chunked_loss_from_hidden_states_and_from_torchtune_chunks():
    batch = _mixed_batch()
    model = tiny_decoder(VOCAB)
    with torch.no_grad():
        logits = model(batch.tokens)
        want = domain_losses(logits, batch.labels, batch.domain_ids, 4)
        hidden = model.norm(model.layers[0](model.tok_embeddings(batch.tokens)))
        for checkpoint_chunks in (True, False):
            got = chunked_domain_losses(hidden, model.output, batch.labels, batch.domain_ids, 4, 4, checkpoint_chunks)
            _assert_same_losses(got, want)
        model.set_num_output_chunks(4)
        chunks = model(batch.tokens)
        assert isinstance(chunks, list) and len(chunks) == 4
        _assert_same_losses(domain_losses_from_chunks(chunks, batch.labels, batch.domain_ids, 4), want)
