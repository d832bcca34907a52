"""Smoke test of burden on the oldest torch it supports (the floor tier of .ci/run).

Run it inside a virtual environment that has the floor torch and burden (``pip install -e
'.[test]'``). It checks, with figures that do not depend on the torch version:

- ``import burden`` works (no private aten op missing at import);
- SE-ResNet-50 at 224: the parameter count, and positive FLOPs and feature memory;
- a tiny conv net whose multiply-accumulates are known by hand (macs convention);
- one training-mode estimate (backward FLOPs, gradients, optimizer state);
- an input too small for a convolution raises ``burden.BurdenError`` (torch 2.4 to 2.6 have meta
  kernels that do not raise for it: a silent 0-FLOP estimate would be a bug);

then runs the whole test suite (``PYTEST_FILES``), so the
output ends on pytest's "N passed" line. Exit status: 0 when everything passed.

    python benches/floor_smoke.py            # smoke + pytest files
    python benches/floor_smoke.py --no-pytest
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# pytest files that pass on the floor torch; each is run as part of the floor tier
# the whole suite passes on the floor (torch 2.7.1: 286 passed, 2026-11-26); tests/ is run as a whole
PYTEST_FILES = ["tests"]

failures: list[str] = []


def check(name: str, fn) -> None:
    t = time.perf_counter()
    try:
        detail = fn()
    except Exception as exc:  # noqa: BLE001 - every failure is reported, then the script fails
        failures.append(name)
        print(f"FAIL  {name}: {type(exc).__name__}: {exc}", flush=True)
        return
    print(f"ok    {name} ({time.perf_counter() - t:.1f} s){': ' + detail if detail else ''}", flush=True)


def main(argv: list[str]) -> int:
    import torch

    import burden
    from torch import nn

    print(f"torch {torch.__version__}, burden {burden.__version__}, python {sys.version.split()[0]}", flush=True)

    def se_resnet50() -> str:
        e = burden.estimate("se_resnet50", 224)
        assert e.params == 28_141_144, e.params
        assert 3.5e9 < e.flops < 4.5e9, e.flops
        assert e.feature_bytes > 0 and e.peak_bytes > e.param_bytes, (e.feature_bytes, e.peak_bytes)
        return f"{e.params:,} params, {e.flops / 1e9:.2f} GFLOPs"

    def tiny_conv_net() -> str:
        net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        e = burden.estimate(net, (3, 8, 8), convention="macs")
        # conv 3->8, 3x3 on 8x8: 6x6x8 outputs x 27; conv 8->4, 3x3, padded: 6x6x4 x 72; linear 4->2
        expected = 6 * 6 * 8 * 27 + 6 * 6 * 4 * 72 + 2 * 4
        assert e.flops == expected, (e.flops, expected)
        assert e.params == sum(p.numel() for p in net.parameters()), e.params
        return f"{e.flops} MACs"

    def training() -> str:
        e = burden.estimate("se_resnet50", 224, mode="training")
        t = e.training
        assert t is not None and t.backward_flops > t.forward_flops > 0, t
        assert t.gradient_bytes == 4 * e.trainable_params, (t.gradient_bytes, e.trainable_params)  # float32
        # Adam: two moments per trainable value and a 4-byte step counter per parameter tensor
        counters = 4 * len(list(burden.create_model("se_resnet50").parameters()))
        assert t.optimizer_bytes == 2 * t.gradient_bytes + counters and t.training_peak_bytes > e.peak_bytes, t
        return f"backward {t.backward_flops / 1e9:.2f} GFLOPs, peak {t.training_peak_bytes / 2**20:.0f} MiB"

    def too_small() -> str:
        # 7x7 on 4x4: a negative output size; 3x3 on 2x2: an empty (0x0) output, which the meta
        # kernels of torch 2.4 to 2.6 return without raising
        said = []
        for kernel, side in [(7, 4), (3, 2)]:
            try:
                e = burden.estimate(nn.Conv2d(3, 8, kernel), (3, side, side))
            except burden.BurdenError as exc:
                said.append(f"{kernel}x{kernel} on {side}x{side}: {type(exc).__name__}")
                continue
            raise AssertionError(f"a {side}x{side} input to a {kernel}x{kernel} convolution gave an estimate "
                                 f"({e.flops} FLOPs) instead of burden.BurdenError")
        return "; ".join(said)

    def cli() -> str:
        proc = subprocess.run([sys.executable, "-m", "burden", "estimate", "se_resnet50", "--input", "224"],
                              capture_output=True, text=True, timeout=300, cwd=REPO)
        assert proc.returncode == 0 and "28,141,144" in proc.stdout, proc.stdout + proc.stderr
        return "burden estimate se_resnet50 --input 224"

    for name, fn in [("se_resnet50 at 224", se_resnet50), ("tiny conv net", tiny_conv_net),
                     ("training step", training), ("too-small input raises BurdenError", too_small),
                     ("CLI", cli)]:
        check(name, fn)
    if failures:
        print(f"floor smoke: {len(failures)} check(s) failed: {', '.join(failures)}", flush=True)

    if "--no-pytest" in argv:
        return 1 if failures else 0
    files = [f for f in PYTEST_FILES if (REPO / f).exists()]
    if not files:  # never let pytest exit 5 (no tests): a missing list is a failure of its own
        print("floor smoke: none of the pytest files exist", flush=True)
        return 1
    rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files], cwd=REPO)
    if rc == 5:
        print("floor smoke: pytest collected no tests", flush=True)
    return 1 if failures or rc else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
