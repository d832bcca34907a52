"""Causal language models from transformers, analysed on meta as ``benches/hf_zoo.py`` runs them,
at small sizes: inference, a training step and ``generate()``, each figure checked against
something burden did not compute (the model's own parameters, FlopCounterMode on a real CPU run,
the KV cache's size from the config). Some of these models stopped the trace before: JetMoE reads
its router's choices with ``.tolist()`` (balanced routing, ``burden.routing``), BigBird indexes its
ids with a Python list, RecurrentGemma keeps its cache in plain attributes that start as ``None``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

import burden  # noqa: E402
from burden.errors import DataDependentError, ForwardError, InputSpecError, InternalError  # noqa: E402
from burden.tokens import token_inputs  # noqa: E402
from burden.trace import Tracer  # noqa: E402
from burden import routing  # noqa: E402

SEQ, NEW = 32, 3
SMALL = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256}
CONFIGS = {
    "llama": SMALL,
    "mixtral": {**SMALL, "num_local_experts": 4, "num_experts_per_tok": 2},
    "jetmoe": {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
               "num_key_value_heads": 2, "kv_channels": 16, "num_local_experts": 4, "num_experts_per_tok": 2},
    "bart": {"vocab_size": 256, "d_model": 64, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 2,
             "decoder_attention_heads": 2, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128,
             "max_position_embeddings": 256},
    "big_bird": {"vocab_size": 256, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "intermediate_size": 128, "max_position_embeddings": 256},
    "recurrent_gemma": {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
                        "num_attention_heads": 4, "num_key_value_heads": 1, "attention_window_size": 64},
}


def config(model_type: str, **extra):
    return transformers.AutoConfig.for_model(model_type, **CONFIGS[model_type], **extra)


def on_meta(model_type: str, **extra) -> nn.Module:
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(config(model_type, **extra), dtype=torch.bfloat16).eval()


def generate(model: nn.Module):
    return burden.generate(model, SEQ, NEW, batch_size=1)


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_inference_training_and_generate_on_meta(model_type):
    model = on_meta(model_type)
    params = sum(p.numel() for p in model.parameters())  # each tied weight once
    floating_buffers = sum(b.numel() for b in model.buffers() if b.is_floating_point())
    e = burden.estimate(model, seq=SEQ, convention="torch", device="meta")
    assert e.device == "meta" and e.trainable_params == params and e.params == params + floating_buffers
    assert e.flops >= 2 * SEQ * model.get_output_embeddings().weight.numel()  # the logits of every position
    t = burden.estimate(model, seq=SEQ, convention="torch", device="meta", mode="training")
    assert t.training.loss.startswith("the model's loss") and t.training.training_peak_bytes > e.peak_bytes
    g = generate(model)  # after the other two: each trace leaves the model as it was
    assert g.params == params and g.prefill.flops > 0 and g.decode.flops > 0 and g.kv_cache_bytes > 0


def test_flops_against_a_real_cpu_run():
    """FlopCounterMode on a real run with random weights, where the router picks as it will: a
    mixture of experts' total FLOPs depend on how many tokens each expert gets only through their
    sum, so balanced routing on meta gives the real run's total. Eager attention on both sides:
    FlopCounterMode has no formula for the CPU's fused attention kernel."""
    from torch.utils.flop_counter import FlopCounterMode

    for model_type in ("llama", "jetmoe"):
        torch.manual_seed(0)
        real = transformers.AutoModelForCausalLM.from_config(config(model_type), attn_implementation="eager").eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            real(**token_inputs(real.config, 1, SEQ))
        meta = on_meta(model_type, attn_implementation="eager")
        e = burden.estimate(meta, seq=SEQ, convention="torch", device="meta")
        assert e.flops == counter.get_total_flops(), model_type


# jetmoe sums its experts' gradients; bart, big_bird and recurrent_gemma tie the embedding to the head, whose
# two gradients autograd sums in place: the sum is the parameter's .grad
@pytest.mark.parametrize("model_type", ["llama", "mixtral", "jetmoe", "bart", "big_bird", "recurrent_gemma"])
def test_gradients_against_a_real_backward(model_type):
    torch.manual_seed(0)
    real = transformers.AutoModelForCausalLM.from_config(config(model_type), dtype=torch.bfloat16).train()
    real(**token_inputs(real.config, 1, SEQ, labels=True)).loss.backward()
    grads = {p.grad.untyped_storage()._cdata: p.grad.untyped_storage().nbytes() for p in real.parameters()
             if p.grad is not None}
    t = burden.estimate(on_meta(model_type), seq=SEQ, device="meta", mode="training")
    assert t.training.gradient_bytes == sum(grads.values())


def test_kv_cache_from_the_config():
    model = on_meta("llama")
    c = model.config
    head_dim = c.hidden_size // c.num_attention_heads
    tokens = SEQ + NEW - 1  # the last token is produced, not fed back
    assert generate(model).kv_cache_bytes == 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * tokens * 2


def test_balanced_routing_is_assumed_and_said():
    """JetMoE's router reads how many tokens each expert gets (``.tolist()``): on meta every expert
    gets tokens * top_k / experts of them, and the trace says so."""
    model = on_meta("jetmoe")
    tracer = Tracer(model, meta=True)
    try:
        with torch.no_grad():
            tracer.run((), token_inputs(model.config, 1, SEQ))
    finally:
        tracer.stop()
    assert tracer.values.assumptions == {routing.NOTE}
    llama = on_meta("llama")  # a model that reads no choice assumes nothing
    tracer = Tracer(llama, meta=True)
    with torch.no_grad():
        tracer.run((), token_inputs(llama.config, 1, SEQ))
    tracer.stop()
    assert not tracer.values.assumptions


def test_the_assumption_is_in_the_notes():
    """What a user reads: the estimate and the generation of a model whose router's choices were
    assumed say so; a model that reads no choice has no such note."""
    assert routing.NOTE in burden.estimate(on_meta("jetmoe"), seq=SEQ, device="meta").notes
    assert routing.NOTE in generate(on_meta("jetmoe")).notes
    assert routing.NOTE not in burden.estimate(on_meta("llama"), seq=SEQ, device="meta").notes


def test_routing_refuse_assumes_nothing():
    """``routing="refuse"``: the same router read stops the meta trace, as it would with no assumption,
    and the CLI offers the same choice."""
    with pytest.raises(DataDependentError):
        burden.estimate(on_meta("jetmoe"), seq=SEQ, device="meta", routing="refuse")
    with pytest.raises(InputSpecError, match="routing"):
        burden.estimate(on_meta("llama"), seq=SEQ, device="meta", routing="even")


def test_balanced_choices():
    choices = routing.balanced_choices((6, 2), -1, 4)
    assert torch.bincount(choices.flatten(), minlength=4).tolist() == [3, 3, 3, 3]
    assert all(len(set(row)) == 2 for row in choices.tolist())


class CacheSlot(nn.Module):
    """RecurrentGemma's way: a cache kept as a plain attribute, ``None`` until the forward fills it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.state = None

    def forward(self, x):
        if self.state is None:
            self.state = torch.zeros_like(x)
        return self.fc(x + self.state)


def test_a_cache_slot_is_given_back_as_it_was():
    model = CacheSlot()
    burden.estimate(model, inputs=(burden.TensorSpec(2, 8),), device="meta")
    assert "state" in vars(model) and model.state is None
    assert burden.estimate(model, inputs=(burden.TensorSpec(2, 8),), device="meta").params == 72


class MixesDtypes(nn.Module):
    """XLNet in bfloat16: a float32 tensor of its own meets a bfloat16 one, on the CPU as on meta."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(4, 8, 8, dtype=torch.bfloat16))

    def forward(self, x):
        return torch.bmm(x.float(), self.w)


def test_mixed_dtypes_are_the_models_not_a_shape_that_does_not_fit():
    try:
        torch.bmm(torch.empty(4, 2, 8, device="meta"), torch.empty(4, 8, 8, dtype=torch.bfloat16, device="meta"))
        pytest.skip("this release's meta kernel for bmm takes the two dtypes, which its CPU kernel refuses")
    except RuntimeError:
        pass
    with pytest.raises(ForwardError, match="mixes dtypes") as caught:
        burden.estimate(MixesDtypes(), inputs=(burden.TensorSpec(4, 2, 8, dtype=torch.bfloat16),), device="meta")
    assert "does not fit" not in str(caught.value) and not isinstance(caught.value, InternalError)
