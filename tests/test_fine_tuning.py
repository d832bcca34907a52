"""The models people fine-tune: Hugging Face causal LMs from configs, with LoRA adapters (``peft``) and
with Hugging Face's gradient checkpointing, each a whole training step against the CPU allocator
(``allocator_oracle.measure_step``: a real step, the allocator's own events), which shares nothing
with burden's method. The models are small configs built here; no weights are downloaded.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import burden
from allocator_oracle import measure_step

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

VOCAB = 1000
# PyTorch makes a Python number passed to an op that takes a tensor into an 8-byte CPU tensor, outside
# any op; autograd keeps LoRA's scaling factor so until backward, one per adapted layer. burden does
# not see those; they are the whole difference below.
WRAPPED_NUMBER = 8


def llama(lora: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
                                      max_position_embeddings=256)
    model = transformers.LlamaForCausalLM(config)
    if lora:
        model = peft.get_peft_model(model, peft.LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    return model


def qwen2_checkpointed() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.Qwen2Config(hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
                                      max_position_embeddings=256)
    model = transformers.Qwen2ForCausalLM(config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers 5 calls it deprecated; fine-tuning recipes still call it
        model.gradient_checkpointing_enable()
    return model


def tokens(batch: int, length: int) -> dict:
    ids = torch.randint(0, VOCAB, (batch, length))
    return {"input_ids": ids, "labels": ids.clone()}


def spec(batch: int, length: int) -> dict:
    return {name: burden.TensorSpec(batch, length, dtype=torch.int64) for name in ("input_ids", "labels")}


def measured(build, batch: int, length: int, impl: str = "single", accum: int = 1):
    flags = {"foreach": impl == "foreach"} | ({"fused": True} if impl == "fused" else {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return measure_step(build(), (), tokens(batch, length), optimizer=lambda ps: torch.optim.AdamW(ps, **flags),
                            accum=accum)


@pytest.mark.parametrize("impl", ["single", "foreach", "fused"])
@pytest.mark.parametrize("batch", [1, 4])
def test_lora_step_against_the_allocator(impl, batch):
    e = burden.estimate(llama(lora=True), inputs=spec(batch, 64), mode="training", optimizer="adamw",
                        optimizer_impl=impl)
    t = e.training
    real = measured(lambda: llama(lora=True), batch, 64, impl)
    # frozen weights get no gradient and no state: AdamW's two moments and a step counter per adapter tensor
    adapters = [p for p in llama(lora=True).parameters() if p.requires_grad]
    assert t.optimizer_bytes == real.optimizer_state == 2 * 4 * sum(p.numel() for p in adapters) + 4 * len(adapters)
    assert t.gradient_bytes == 4 * sum(p.numel() for p in adapters)
    assert 0 <= real.peak - t.training_peak_bytes <= WRAPPED_NUMBER * 4  # 2 layers x (q, v)
    assert t.loss == "the model's loss (output.loss)"


@pytest.mark.parametrize("impl", ["single", "foreach"])
def test_lora_is_far_below_full_fine_tuning(impl):
    full = burden.estimate(llama(), inputs=spec(2, 64), mode="training", optimizer="adamw", optimizer_impl=impl)
    lora = burden.estimate(llama(lora=True), inputs=spec(2, 64), mode="training", optimizer="adamw",
                           optimizer_impl=impl)
    assert lora.training.optimizer_bytes < full.training.optimizer_bytes / 50
    assert lora.training.training_peak_bytes < full.training.training_peak_bytes


# checkpoint saves the CPU generator's state (a 5,056-byte tensor made outside any op) per checkpointed layer
RNG_STATE = 5_056


@pytest.mark.parametrize("impl", ["single", "fused"])
@pytest.mark.parametrize("batch", [1, 4])
def test_hugging_face_gradient_checkpointing_on_meta(impl, batch):
    """Hugging Face's checkpointing turns the cache off, and the packed-sequence check then reads the
    position ids' values (``.all()``): positions come from ``arange``, so burden knows them on meta."""
    e = burden.estimate(qwen2_checkpointed(), inputs=spec(batch, 128), mode="training", optimizer="adamw",
                        optimizer_impl=impl, device="meta")
    t = e.training
    real = measured(qwen2_checkpointed, batch, 128, impl)
    assert 0 <= real.peak - t.training_peak_bytes <= 2 * RNG_STATE + WRAPPED_NUMBER
    plain = burden.estimate(llama(), inputs=spec(batch, 128), mode="training", optimizer="adamw",
                            optimizer_impl=impl)
    assert plain.training.saved_activation_bytes > 0 and t.saved_activation_bytes > 0


def test_gradient_accumulation_on_a_lora_model():
    e = burden.estimate(llama(lora=True), inputs=spec(2, 64), mode="training", optimizer="adamw", grad_accum=2)
    t = e.training
    real = measured(lambda: llama(lora=True), 2, 64, accum=2)
    assert 0 <= real.peak - t.training_peak_bytes <= WRAPPED_NUMBER * 4
    assert t.grad_accum == 2 and t.peak_phase.endswith("(micro-batch 2)")
    assert (real.peak_phase.name, real.peak_phase.micro_batch) == ("backward", 1)


def test_fit_names_the_effective_batch():
    f = burden.fit(llama(lora=True), "64MiB", inputs=spec(1, 64), optimizer="adamw", grad_accum=4)
    assert f.max_batch > 1 and f.grad_accum == 4 and f.effective_batch == 4 * f.max_batch
    at = burden.estimate(llama(lora=True), inputs=spec(f.max_batch, 64), mode="training", optimizer="adamw",
                         grad_accum=4)
    assert at.training.training_peak_bytes == f.peak_bytes
