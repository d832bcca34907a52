"""``burden bench --generate``: a real ``generate()`` with random weights, timed beside its roofline.

Time to first token is the median of whole ``generate()`` calls for one new token (the prefill
and the choice of the token). The time per output token is the difference between calls for
``new_tokens`` tokens and for one, over the ``new_tokens - 1`` decode steps between them: the
mean step, where burden's prediction is the last, longest step. Each is timed by
``torch.utils.benchmark`` (warm-up first, CUDA synchronised, the process's threads kept).
Efficiency is predicted / measured, as in ``burden bench``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .analysis import model_to_analyse
from .benchmark import device_name, free_bytes, real_model
from .errors import ForwardError, InputSpecError
from .figures import GenerateBenchFigures
from .generation import generate_figures, generate_options
from .inputs import dtype_name
from .request import Request, model_dtype
from .state import preserved_modes
from .tokens import token_inputs


def _median(run: Any, min_run_time: float, label: str) -> float:
    from torch.utils.benchmark import Timer

    run()  # the first call builds kernels and caches
    timer = Timer(stmt="run()", globals={"run": run}, num_threads=torch.get_num_threads(), label=label)
    return timer.blocked_autorange(min_run_time=min_run_time).median


def generate_bench_figures(model: nn.Module | str, req: Request, prompt: int, new_tokens: int, device: str,
                           min_run_time: float) -> GenerateBenchFigures:
    """The figures of ``burden.bench_generate`` (which documents the arguments): ``req`` is the
    meta prediction's, with the batch, dtype, target and profile of the run on ``device``."""
    if new_tokens < 2:
        raise InputSpecError("timing a decode step needs at least 2 new tokens")
    batch_size, profile = req.batch, req.profile
    name, meta = model_to_analyse(model)
    predicted = generate_figures(name, meta, req, prompt, new_tokens)
    free = free_bytes(device)
    if free is not None and predicted.peak_bytes > free:
        raise InputSpecError(f"generating with {name} at batch {batch_size} holds about "
                             f"{predicted.peak_bytes / 2**30:.2f} GiB, more than the {free / 2**30:.2f} GiB free on "
                             f"{device}; use a smaller --batch or --prompt")
    _, module = real_model(model, device, req.dtype)
    inputs = token_inputs(module.config, batch_size, prompt, device=device)

    def runner(tokens: int) -> Any:
        options = generate_options(module, tokens, "dynamic")

        def run() -> None:
            module.generate(**inputs, **options)
        return run

    with preserved_modes(module), torch.no_grad():
        module.eval()
        try:
            first = _median(runner(1), min_run_time, name)
            whole = _median(runner(new_tokens), min_run_time, name)
        except Exception as exc:
            raise ForwardError(f"the real generate() of {name} failed: {type(exc).__name__}: "
                               f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
    per_token = max(whole - first, 0.0) / (new_tokens - 1)
    notes = () if profile is not None else ("no efficiency: no device profile to compare with; run `burden "
                                            "calibrate` (CPU) or name one with --device-profile",)
    return GenerateBenchFigures(
        model=name, batch=batch_size, prompt=prompt, new_tokens=new_tokens, dtype=dtype_name(model_dtype(module)),
        device=device, device_name=device_name(device),
        threads=torch.get_num_threads() if device == "cpu" else None, time_to_first_token_seconds=first,
        seconds_per_output_token=per_token, predicted=predicted if profile is not None else None,
        profile=predicted.prefill.latency.device if predicted.prefill.latency is not None else None, notes=notes)
