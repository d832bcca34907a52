"""Token inputs for language models: real ids and masks, whose values the trace may read.

A language model's control flow reads its inputs' values: ``generate()`` checks the ids
(``(input_ids < 0).any()``), a model tests whether the attention mask pads anything, and
positions come from the mask's running sum. These tensors are small beside the model, so they
are made for real on the CPU (``burden.values`` then computes what depends on them alone), while
everything that depends on a weight stays on meta. The ids are one ordinary token repeated (not
padding, beginning or end of sequence), and the mask is all ones: no sequence is padded.
"""

from __future__ import annotations

from typing import Any

import torch

SPECIAL_TOKENS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id")


def ordinary_token(config: Any) -> int:
    """The smallest token id that none of the config's special tokens uses."""
    special = set()
    for name in SPECIAL_TOKENS:
        value = getattr(config, name, None)
        special.update(value if isinstance(value, (list, tuple)) else [value])
    token = 1
    while token in special:
        token += 1
    return token


def token_inputs(config: Any, batch: int, seq: int, labels: bool = False,
                 device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of ``batch`` sequences of ``seq`` tokens on ``device``,
    and with ``labels`` the ids as labels too (a language model's loss, as fine-tuning passes them)."""
    ids = torch.full((batch, seq), ordinary_token(config), dtype=torch.long, device=device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if labels:
        inputs["labels"] = ids.clone()
    return inputs
