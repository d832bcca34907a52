"""Per-layer figures add up: parents to children plus own ops, layers to totals."""

import pytest
import torch
from torch import nn

import burden

FIELDS = ("params", "param_bytes", "feature_bytes", "flops")


def parent(name):
    return name.rsplit(".", 1)[0] if "." in name else ""


@pytest.mark.parametrize("name", ["se_resnet50", "se_bn_inception", "senet154"])
def test_layers_sum_to_totals(name):
    e = burden.estimate(name, 224, batch_size=2)
    by_name = {r.name: r for r in e.layers}
    root = by_name[""]
    for field in FIELDS:
        assert getattr(root, field) == getattr(e, field)
        assert sum(getattr(r, "self_" + field) for r in e.layers) == getattr(e, field)
        for r in e.layers:
            children = [c for c in e.layers if c.name and c.depth == r.depth + 1 and parent(c.name) == r.name]
            assert getattr(r, field) == getattr(r, "self_" + field) + sum(getattr(c, field) for c in children)


def test_module_paths_and_functional_work_attributed_to_the_enclosing_module():
    e = burden.estimate("se_resnet50", 224)
    se = e.layer("layer3.4.se")
    assert se.type == "SqueezeExcite" and se.depth == 3
    block = e.layer("layer3.4")
    # the fused rescale + sum runs in the block's own forward: 2 FLOPs per output element
    assert block.self_flops == 2 * 1024 * 14 * 14
    assert block.self_feature_bytes == 1024 * 14 * 14 * 4
    assert block.output_shape == [1, 1024, 14, 14]


def test_module_called_twice_counts_twice():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3, bias=False)

        def forward(self, x):
            return self.fc(self.fc(x))

    e = burden.estimate(Twice(), (3,))
    assert e.flops == 2 * 9
    assert e.layer("fc").calls == 2


@pytest.mark.consistency
def test_meta_equals_real_cpu_tensors():
    torch.manual_seed(0)

    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.pool = nn.MaxPool2d(2, ceil_mode=True)
            self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 2, 1), nn.ReLU(), nn.Conv2d(2, 8, 1),
                                    nn.Sigmoid())
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            y = self.pool(torch.relu(self.bn(self.conv(x))))
            y = torch.addcmul(y, y, self.se(y))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))

    model = Small()
    for memory in ("convnet-burden", "all-outputs"):  # the second sees every storage PyTorch allocates
        on_meta = burden.estimate(model, (3, 17, 23), batch_size=3, memory=memory)
        on_cpu = burden.estimate(model, (3, 17, 23), batch_size=3, memory=memory, device="cpu")
        assert on_meta == on_cpu
        assert on_meta.flops > 0


def test_any_input_size_on_meta_without_allocating():
    # SENet-154 at 672 x 672, batch 128: hundreds of GB of features if they were real.
    e = burden.estimate("senet154", 672, batch_size=128)
    assert e.feature_bytes > 300 * 2**30
    assert e.layer("layer4").output_shape == [128, 2048, 21, 21]


@pytest.mark.consistency
def test_first_analysis_in_a_process_equals_later_ones():
    """First-time code paths (imports, meta kernels) must not change what burden measures."""
    import subprocess
    import sys

    code = ("import burden\n"
            "peaks = [burden.estimate('se_resnet50', 224).peak_feature_bytes for _ in range(2)]\n"
            "peaks.append(burden.estimate('se_resnet50', 224, device='cpu').peak_feature_bytes)\n"
            "print(peaks)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    first, second, real = eval(out.stdout)
    assert first == second == real
