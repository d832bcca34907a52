"""Bytes moved, real FLOPs and roofline time, against figures worked out by hand here; device
profiles (built-in, stored, bad); ``burden calibrate``, ``burden bench`` and the views.

The oracles are arithmetic on the layers' shapes, written out below: nothing here reads burden's
trace or formulas to build an expected figure. Timing itself is checked in ``benches/``
(``latency_validation.py``): these tests check what the figures are made of, never how fast.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

import burden
from burden import devices
from burden.devices import DeviceProfile, Roof
from burden.errors import InputSpecError


class Tiny(nn.Module):
    """conv (bias) -> ReLU in place -> flatten (a view) -> linear (bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(8 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.relu(self.conv(x)), 1))


# By hand, batch 2, float32 (4 bytes), input 3 x 8 x 8:
X = 2 * 3 * 8 * 8 * 4  # 1,536 B input
CONV_W, CONV_B, CONV_OUT = 8 * 3 * 3 * 3 * 4, 8 * 4, 2 * 8 * 6 * 6 * 4  # 864, 32, 2,304
CONV_BYTES = X + CONV_W + CONV_B + CONV_OUT  # reads input, weight and bias, writes its output
CONV_FLOPS = 2 * (2 * 8 * 6 * 6) * (3 * 3 * 3) + 2 * 8 * 6 * 6  # 2 per multiply-add, 1 per bias addition
RELU_BYTES, RELU_FLOPS = 2 * CONV_OUT, 2 * 8 * 6 * 6  # in place: reads and writes the conv's output
FC_BYTES = 10 * 4 + 2 * 288 * 4 + 10 * 288 * 4 + 2 * 10 * 4  # bias, input, weight (w.t() moves nothing), output
FC_FLOPS = 2 * 2 * 10 * 288 + 2 * 10


def profile(peak: float = 1e6, bandwidth: float = 1e6, cache_bytes: int = 0, cache_bandwidth: float = 0.0,
            **extra: float) -> DeviceProfile:
    peaks = (("float32", peak),) + tuple(extra.items())
    return DeviceProfile(name="handmade", device="a device made up for a test", kind="cpu",
                         roofs=(Roof(peaks, bandwidth, cache_bytes, cache_bandwidth, threads=None),))


def test_bytes_moved_by_hand():
    e = burden.estimate(Tiny(), (3, 8, 8), batch_size=2)
    assert e.layer("conv").bytes_moved == CONV_BYTES == 4736
    assert e.layer("relu").bytes_moved == RELU_BYTES
    assert e.layer("fc").bytes_moved == FC_BYTES
    assert e.layer("").self_bytes_moved == 0  # flatten is a view: nothing moves
    assert e.bytes_moved == CONV_BYTES + RELU_BYTES + FC_BYTES
    half = burden.estimate(Tiny(), (3, 8, 8), batch_size=2, dtype="float16")
    assert half.bytes_moved * 2 == e.bytes_moved  # every value at the analysis dtype's size


def test_an_argument_read_twice_moves_once():
    class Square(nn.Module):
        def forward(self, x):
            return x * x

    e = burden.estimate(Square(), (3, 8, 8))
    x = 3 * 8 * 8 * 4  # batch 1
    assert e.bytes_moved == x + x  # reads x once, writes x * x


def test_a_change_of_strides_moves_nothing():
    class Restride(nn.Module):
        def forward(self, x):
            y = x.clone()  # reads and writes 768 bytes
            y.as_strided_((3, 64), (64, 1))  # in place, but metadata only (the CPU's mean does this)
            return y

    e = burden.estimate(Restride(), (3, 8, 8))
    assert e.bytes_moved == 2 * 3 * 8 * 8 * 4


def test_roofline_flops_by_hand():
    e = burden.estimate(Tiny(), (3, 8, 8), batch_size=2, convention="roofline")
    assert e.layer("conv").flops == CONV_FLOPS
    assert e.layer("relu").flops == RELU_FLOPS
    assert e.layer("fc").flops == FC_FLOPS
    assert e.uncounted_ops == ()


def test_roofline_flops_of_norms_pooling_softmax_and_reductions():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm2d(4)
            self.pool = nn.MaxPool2d(3, stride=2)
            self.avg = nn.AdaptiveAvgPool2d(1)
            self.ln = nn.LayerNorm(4)

        def forward(self, x):
            y = self.pool(self.bn(x))  # 2 x 4 x 7 x 7 after a 3 x 3 window
            z = self.ln(self.avg(y).flatten(1))
            return torch.softmax(z, dim=1), y.mean()

    e = burden.estimate(Mixed().eval(), (4, 16, 16), batch_size=2, convention="roofline")
    n = 2 * 4 * 16 * 16
    assert e.layer("bn").flops == 2 * n  # running statistics: scale and shift
    assert e.layer("pool").flops == 2 * 4 * 7 * 7 * 9
    assert e.layer("avg").flops == 2 * 4 * 7 * 7  # 1 per input element
    assert e.layer("ln").flops == 5 * 2 * 4
    assert e.layer("").self_flops == 5 * 2 * 4 + 2 * 4 * 7 * 7  # softmax, then the mean of y

    class BatchStatistics(nn.Module):
        def forward(self, x):
            return nn.functional.batch_norm(x, None, None, training=True)

    # an inference estimate runs in eval mode; a forward that asks for batch statistics gets them
    assert burden.estimate(BatchStatistics(), (4, 16, 16), batch_size=2, convention="roofline").flops == 5 * n


def test_predicted_time_by_hand():
    e = burden.estimate(Tiny(), (3, 8, 8), batch_size=2, device_profile=profile())
    lat = e.latency
    conv, relu, fc = CONV_FLOPS / 1e6, RELU_BYTES / 1e6, FC_BYTES / 1e6  # each op's larger term
    assert lat.layer("conv").predicted_seconds == pytest.approx(conv)
    assert lat.layer("conv").bound == "compute"  # 31,680 FLOPs against 4,736 bytes at equal roofs
    assert lat.layer("relu").bound == "memory" and lat.layer("fc").bound == "memory"
    assert lat.layer("fc").predicted_seconds == pytest.approx(fc)
    assert lat.predicted_seconds == pytest.approx(conv + relu + fc)
    assert lat.samples_per_second == pytest.approx(2 / (conv + relu + fc))
    assert lat.compute_seconds == pytest.approx(conv) and lat.memory_seconds == pytest.approx(relu + fc)
    assert lat.bound == "compute"
    assert lat.flops == CONV_FLOPS + RELU_FLOPS + FC_FLOPS and lat.bytes_moved == e.bytes_moved
    assert lat.layer("conv").intensity == pytest.approx(CONV_FLOPS / CONV_BYTES)


def test_the_cache_roof_serves_ops_that_fit():
    e = burden.estimate(Tiny(), (3, 8, 8), batch_size=2,
                        device_profile=profile(cache_bytes=10_000, cache_bandwidth=2e6))
    lat = e.latency
    # the ReLU's 4,608 bytes fit and move twice as fast; the linear layer's 13,944 do not
    assert lat.layer("relu").predicted_seconds == pytest.approx(RELU_BYTES / 2e6)
    assert lat.layer("fc").predicted_seconds == pytest.approx(FC_BYTES / 1e6)


def test_float32_convolutions_use_the_tf32_peak_where_cudnn_allows_it():
    slow, fast = 1e6, 1e9
    e = burden.estimate(Tiny(), (3, 8, 8), batch_size=2, device_profile=profile(peak=slow, tfloat32=fast))
    conv = e.latency.layer("conv")
    expected = max(CONV_FLOPS / fast, CONV_BYTES / 1e6) if torch.backends.cudnn.allow_tf32 else CONV_FLOPS / slow
    assert conv.predicted_seconds == pytest.approx(expected)


def test_a_dtype_the_profile_lacks_is_a_clear_error():
    with pytest.raises(InputSpecError, match="no bfloat16 peak"):
        burden.estimate(Tiny(), (3, 8, 8), dtype="bfloat16", device_profile=profile())
    with pytest.raises(InputSpecError, match="no bfloat16 peak"):
        burden.estimate("se_resnet50", dtype="bfloat16", device_profile="v100")


def test_training_with_a_profile_is_refused():
    with pytest.raises(InputSpecError, match="inference forward pass"):
        burden.estimate(Tiny(), (3, 8, 8), mode="training", device_profile="a100")


def test_se_resnet50_on_a100_is_bounded_by_its_data_sheet():
    e = burden.estimate("se_resnet50", batch_size=16, device_profile="a100")
    lat = e.latency
    # no op can beat either roof: the total is at least the FLOPs at the peak and the bytes at the bandwidth
    assert lat.predicted_seconds >= lat.flops / 312e12 * 0.999
    assert lat.predicted_seconds >= lat.bytes_moved / 2039e9 * 0.999
    assert lat.predicted_seconds <= lat.flops / 19.5e12 + lat.bytes_moved / 2039e9
    root = lat.layer("")
    assert sum(lat.layer(n).predicted_seconds for n in ("stem", "layer1", "layer2", "layer3", "layer4", "avgpool",
                                                         "fc")) == pytest.approx(root.predicted_seconds, rel=1e-9)


def test_the_json_keys():
    d = json.loads(burden.estimate(Tiny(), (3, 8, 8), batch_size=2, device_profile=profile()).to_json())
    for key in ("predicted_seconds", "bytes_moved", "samples_per_second", "latency"):
        assert key in d
    layer = next(r for r in d["layers"] if r["name"] == "conv")
    assert layer["bound"] == "compute" and layer["predicted_seconds"] == pytest.approx(CONV_FLOPS / 1e6)
    assert layer["bytes_moved"] == CONV_BYTES
    plain = json.loads(burden.estimate(Tiny(), (3, 8, 8)).to_json())
    assert plain["predicted_seconds"] is None and plain["layers"][1]["bound"] is None


# ------------------------------------------------------------------------------------------------
# profiles


def test_built_in_profiles_name_their_sources():
    for name, p in devices.BUILT_IN.items():
        assert p.sources and all("data sheet" in s or "whitepaper" in s or "CUDA GPUs list" in s
                                 for _, s in p.sources), name
        assert p.capability is not None and p.context_bytes is None  # a data sheet measures no context
        assert p.roof().peak("float32") > 0 and p.roof().bandwidth > 0
        assert p.interconnect is not None and any(what.startswith("interconnect") for what, _ in p.sources)
    assert devices.load("H100").interconnect == 450e9  # NVLink 4: 900 GB/s both ways together
    assert devices.load("H100").roof().peak("bfloat16") == pytest.approx(989.4e12)
    assert devices.matching("NVIDIA H100 80GB HBM3") == "h100"
    assert devices.matching("NVIDIA A100-SXM4-80GB") == "a100"
    assert devices.matching("NVIDIA L40S") is None


def test_unknown_and_missing_profiles(tmp_path, monkeypatch):
    monkeypatch.setenv("BURDEN_HOME", str(tmp_path))
    with pytest.raises(InputSpecError, match="did you mean a100"):
        devices.load("a10O")
    with pytest.raises(InputSpecError, match="burden calibrate"):
        devices.load("local")
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x"}')
    with pytest.raises(InputSpecError, match="not a burden device profile"):
        devices.load(str(bad))
    with pytest.raises(InputSpecError, match="built-in"):
        devices.save(DeviceProfile("a100", "x", "cpu", (Roof((("float32", 1.0),), 1.0),)))


def test_a_stored_profile_round_trips(tmp_path, monkeypatch):
    monkeypatch.setenv("BURDEN_HOME", str(tmp_path))
    made = DeviceProfile("mine", "a test machine", "cpu",
                         (Roof((("float32", 1e9),), 1e9, 4096, 2e9, threads=1), Roof((("float32", 2e9),), 1.5e9,
                                                                                      threads=4)),
                         sources=(("all", "made up"),), measured="today")
    path = devices.save(made)
    assert path == tmp_path / "profiles" / "mine.json"
    assert devices.load("mine") == made
    assert devices.load(str(path)) == made
    assert made.roof(1).threads == 1 and made.roof(3).threads == 4 and made.roof(64).threads == 4


def run_cli(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "burden", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_calibrate_stores_a_profile_that_estimate_uses(tmp_path):
    import os

    env = dict(os.environ, BURDEN_HOME=str(tmp_path))
    proc = run_cli("calibrate", "--quick", "--threads", "1", "--dtype", "float32", "--format", "json", env=env)
    assert proc.returncode == 0, proc.stderr
    stored = json.loads((tmp_path / "profiles" / "local.json").read_text())
    assert stored == json.loads(proc.stdout)
    (roof,) = stored["roofs"]
    assert roof["threads"] == 1 and [k for k, _ in roof["peak_flops"]] == ["float32"]
    assert roof["peak_flops"][0][1] > 0 and roof["bandwidth"] > 0
    est = run_cli("estimate", "se_resnet50", "--device-profile", "local", "--format", "json", env=env)
    assert est.returncode == 0, est.stderr
    assert json.loads(est.stdout)["latency"]["threads"] == 1
    listed = run_cli("profiles", env=env)
    assert listed.returncode == 0 and "local" in listed.stdout and "a100" in listed.stdout


def test_bad_profile_and_calibrate_input_exit_2(tmp_path):
    import os

    env = dict(os.environ, BURDEN_HOME=str(tmp_path))
    for args in (("estimate", "se_resnet50", "--device-profile", "nope"),
                 ("estimate", "se_resnet50", "--device-profile", "local"),
                 ("calibrate", "--name", "a100"), ("calibrate", "--name", "../x"), ("calibrate", "--threads", "0"),
                 ("bench", "se_resnet50", "--min-time", "-1"),
                 ("estimate", "se_resnet50", "--mode", "training", "--device-profile", "a100")):
        proc = run_cli(*args, env=env)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr


# ------------------------------------------------------------------------------------------------
# bench


def test_bench_times_the_real_model_and_leaves_it_as_it_was():
    model = Tiny().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    b = burden.bench(model, (3, 8, 8), batch_size=2, device_profile=profile(), min_run_time=0.05)
    assert b.median_seconds > 0 and b.min_seconds <= b.median_seconds <= b.max_seconds
    assert b.samples_per_second == pytest.approx(2 / b.median_seconds)
    assert b.predicted_seconds == pytest.approx(burden.estimate(Tiny(), (3, 8, 8), batch_size=2,
                                                                device_profile=profile()).latency.predicted_seconds)
    assert b.efficiency == pytest.approx(b.predicted_seconds / b.median_seconds)
    assert [m.name for m in b.modules] == ["conv", "relu", "fc"]
    assert all(m.median_seconds > 0 and m.efficiency == pytest.approx(m.predicted_seconds / m.median_seconds)
               for m in b.modules)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    d = json.loads(b.to_json())
    for key in ("median_seconds", "samples_per_second", "efficiency", "iqr_seconds", "modules"):
        assert key in d


def test_bench_refuses_what_would_not_fit_before_building_it():
    proc = run_cli("bench", "se_resnet50", "--batch", "100000")
    assert proc.returncode == 2 and "use a smaller --batch" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_json_from_the_command_line(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(devices.to_dict(profile(peak=1e9, bandwidth=1e9))))
    proc = run_cli("bench", "se_resnet50", "--input", "64", "--min-time", "0.05", "--device-profile", str(path),
                   "--format", "json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert d["batch"] == 1 and d["device"] == "cpu" and d["efficiency"] > 0
    assert [m["name"] for m in d["modules"]] == ["stem", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    assert math.isclose(d["samples_per_second"], 1 / d["median_seconds"])


def test_compare_adds_predicted_and_measured_columns():
    c = burden.compare([Tiny(), Tiny()], (3, 8, 8), device_profile=profile(), bench_device="cpu")
    table = c.table()
    for header in ("predicted time", "samples/s at most", "measured time", "measured samples/s", "efficiency"):
        assert header in table
    rows = c.to_dict()["rows"]
    assert all(r["predicted_seconds"] > 0 and r["samples_per_second"] > 0 and r["efficiency"] > 0 for r in rows)


def test_the_text_views_name_the_bound():
    e = burden.estimate(Tiny(), (3, 8, 8), batch_size=2, device_profile=profile())
    text = e.summary()
    assert "predicted time" in text and "lower bound" in text and "samples/s" in text
    table = e.table(fmt="simple", columns=["name", "bytes_moved", "predicted", "bound", "intensity"],
                    sort="predicted")
    lines = [line.split()[0] for line in table.splitlines()[2:-1]]
    assert lines == ["conv", "fc", "relu"]
    assert "bytes moved" in burden.estimate(Tiny(), (3, 8, 8)).summary()
    conventions = run_cli("conventions").stdout
    assert "roofline" in conventions and "bytes moved" in conventions and "predicted time" in conventions
