"""Device profiles: the peaks a roofline divides by, from vendors' data sheets or measured here.

A profile gives peak FLOP/s per dtype and main-memory bandwidth, and, where measured, a cache
roof: the bandwidth of working sets that fit in the caches. A measured CPU profile holds one set
of roofs per thread count. Built-in profiles come from data sheets, each figure with its source;
``burden calibrate`` stores measured ones as JSON under the user's configuration folder. No torch
here: the command line lists profiles without importing it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import InputSpecError
from .suggest import did_you_mean

DEFAULT_PROFILE = "local"
TF32 = "tfloat32"  # the tensor-core float32 mode cuDNN convolutions use by default


@dataclass(frozen=True)
class Roof:
    """One set of peaks: FLOP/s per dtype name, and bytes/s read plus written."""

    peak_flops: tuple[tuple[str, float], ...]  # (dtype name, FLOP/s)
    bandwidth: float
    cache_bytes: int = 0  # an op whose bytes fit in this many moves at cache_bandwidth
    cache_bandwidth: float = 0.0
    threads: int | None = None  # the CPU threads it was measured with; None for a GPU

    def peak(self, dtype: str) -> float | None:
        return dict(self.peak_flops).get(dtype)

    def bandwidth_for(self, nbytes: int) -> float:
        return self.cache_bandwidth if self.cache_bytes and nbytes <= self.cache_bytes else self.bandwidth


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    device: str  # "NVIDIA A100 SXM4 80GB", or this machine's processor
    kind: str  # "cpu" or "cuda": where ``burden bench`` runs a model to check it
    roofs: tuple[Roof, ...]
    sources: tuple[tuple[str, str], ...] = ()  # (which figures, where they come from)
    measured: str = ""  # when and with which torch a calibrated profile was measured; "" for a data sheet
    # a GPU's CUDA compute capability (which kernels PyTorch picks, its cuBLAS workspace), and what the
    # CUDA context takes beside the caching allocator when measured (None: not measured)
    capability: tuple[int, int] | None = None
    context_bytes: int | None = None
    # bytes per second a GPU sends to its peers, one direction (NVLink, or PCIe where it has none);
    # None: unknown, and a sharded plan's collectives get no time
    interconnect: float | None = None

    def roof(self, threads: int | None = None) -> Roof:
        """The roofs for ``threads`` CPU threads: those measured with that many, else with the
        nearest count measured (a GPU profile has one set)."""
        if threads is None or len(self.roofs) == 1:
            return self.roofs[-1]
        return min(self.roofs, key=lambda r: (abs((r.threads or 0) - threads), -(r.threads or 0)))

    @property
    def summary(self) -> str:
        where = f"measured {self.measured}" if self.measured else "vendor data sheet"
        return f"{self.name}: {self.device} ({where})"


def _sheet(name: str, device: str, capability: tuple[int, int], flops: dict[str, float], bandwidth: float,
           source: str, note: str = "", link: tuple[float, str] | None = None) -> DeviceProfile:
    peaks = tuple((k, v * 1e12) for k, v in flops.items())
    what = ", ".join(f"{k} {v:g} TFLOP/s" for k, v in flops.items()) + f"; {bandwidth:g} GB/s"
    return DeviceProfile(name=name, device=device, kind="cuda", roofs=(Roof(peaks, bandwidth * 1e9),),
                         sources=((what, source + (f" ({note})" if note else "")),
                                  (f"compute capability {capability[0]}.{capability[1]}",
                                   "NVIDIA CUDA GPUs list (developer.nvidia.com/cuda-gpus)"))
                         + ((f"interconnect {link[0]:g} GB/s each way", link[1]),) * (link is not None),
                         capability=capability, interconnect=None if link is None else link[0] * 1e9)


_DENSE = "dense figures: the data sheet prints the tensor-core ones with sparsity, twice these"
# float32 is the plain FP32 peak; tfloat32 the tensor-core one cuDNN uses for float32 convolutions
BUILT_IN: dict[str, DeviceProfile] = {p.name: p for p in (
    _sheet("v100", "NVIDIA V100 SXM2", (7, 0), {"float32": 15.7, "float16": 125, "float64": 7.8}, 900,
           "NVIDIA Tesla V100 GPU Accelerator data sheet (SXM2 column)",
           link=(150, "NVLink 300 GB/s in both directions together, same data sheet")),
    _sheet("t4", "NVIDIA T4", (7, 5), {"float32": 8.1, "float16": 65, "int8": 130}, 320,
           "NVIDIA T4 Tensor Core GPU data sheet",
           link=(16, "PCIe Gen3 x16 (no NVLink), same data sheet")),
    _sheet("a100", "NVIDIA A100 SXM4 80GB", (8, 0), {"float32": 19.5, TF32: 156, "bfloat16": 312, "float16": 312,
                                             "int8": 624, "float64": 9.7}, 2039,
           "NVIDIA A100 Tensor Core GPU data sheet (A100 80GB SXM column)", "dense figures",
           link=(300, "NVLink 600 GB/s in both directions together, same data sheet")),
    _sheet("h100", "NVIDIA H100 SXM5 80GB", (9, 0), {"float32": 67, TF32: 494.7, "bfloat16": 989.4, "float16": 989.4,
                                             "int8": 1978.9, "float64": 34}, 3350,
           "NVIDIA H100 Tensor Core GPU data sheet (H100 SXM column)", _DENSE,
           link=(450, "NVLink 900 GB/s in both directions together, same data sheet")),
    _sheet("h200", "NVIDIA H200 SXM 141GB", (9, 0), {"float32": 67, TF32: 494.7, "bfloat16": 989.4, "float16": 989.4,
                                             "int8": 1978.9, "float64": 34}, 4800,
           "NVIDIA H200 Tensor Core GPU data sheet (H200 SXM column)", _DENSE,
           link=(450, "NVLink 900 GB/s in both directions together, same data sheet")),
    _sheet("l4", "NVIDIA L4", (8, 9), {"float32": 30.3, TF32: 60, "bfloat16": 121, "float16": 121, "int8": 242.5}, 300,
           "NVIDIA L4 Tensor Core GPU data sheet", _DENSE,
           link=(32, "PCIe Gen4 x16 64 GB/s in both directions together (no NVLink), same data sheet")),
    _sheet("rtx4090", "NVIDIA GeForce RTX 4090", (8, 9), {"float32": 82.6, TF32: 82.6, "bfloat16": 165.2,
                                                  "float16": 165.2, "int8": 660.6}, 1008,
           "NVIDIA Ada Lovelace GPU Architecture whitepaper, Appendix A (GeForce RTX 4090 column)",
           "dense figures; FP16 and BF16 with FP32 accumulate, as PyTorch multiplies",
           link=(32, "PCIe Gen4 x16 (no NVLink), same whitepaper: 64 GB/s in both directions together")),
)}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def profile_folder() -> Path:
    """Where measured profiles live: $BURDEN_HOME/profiles, else the user's configuration folder."""
    home = os.environ.get("BURDEN_HOME")
    if home:
        return Path(home) / "profiles"
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "burden" / "profiles"


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputSpecError(f"a profile name is letters, digits, '.', '_' and '-' (up to 64), got {name!r}")
    if name in BUILT_IN:
        raise InputSpecError(f"{name!r} is a built-in profile from a data sheet; store a measured one under "
                             f"another name, such as {name}-measured")
    return name


def stored_names() -> list[str]:
    folder = profile_folder()
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def to_dict(profile: DeviceProfile) -> dict[str, Any]:
    return asdict(profile)


def from_dict(data: dict[str, Any], origin: str) -> DeviceProfile:
    try:
        roofs = tuple(Roof(peak_flops=tuple((str(k), float(v)) for k, v in r["peak_flops"]),
                           bandwidth=float(r["bandwidth"]), cache_bytes=int(r.get("cache_bytes", 0)),
                           cache_bandwidth=float(r.get("cache_bandwidth", 0.0)), threads=r.get("threads"))
                      for r in data["roofs"])
        capability = data.get("capability")
        context = data.get("context_bytes")
        profile = DeviceProfile(name=str(data["name"]), device=str(data["device"]), kind=str(data["kind"]),
                                roofs=roofs, sources=tuple(tuple(s) for s in data.get("sources", ())),
                                measured=str(data.get("measured", "")),
                                capability=None if capability is None else (int(capability[0]), int(capability[1])),
                                context_bytes=None if context is None else int(context),
                                interconnect=None if data.get("interconnect") is None else float(data["interconnect"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputSpecError(f"{origin} is not a burden device profile ({type(exc).__name__}: {exc})") from None
    if not roofs or any(r.bandwidth <= 0 or not r.peak_flops or min(v for _, v in r.peak_flops) <= 0
                        for r in roofs):
        raise InputSpecError(f"{origin} is not a burden device profile: it needs positive peaks and bandwidth")
    return profile


def save(profile: DeviceProfile) -> Path:
    folder = profile_folder()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{check_name(profile.name)}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(to_dict(profile), indent=2) + "\n")
    tmp.replace(path)  # a reader never sees half a profile
    return path


def _read(path: Path, origin: str) -> DeviceProfile:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputSpecError(f"cannot read {origin}: {exc}") from None
    if not isinstance(data, dict):
        raise InputSpecError(f"{origin} is not a burden device profile")
    return from_dict(data, origin)


def load(name: str | DeviceProfile) -> DeviceProfile:
    """A profile by name: built-in, stored by ``burden calibrate``, or a path to a profile's JSON."""
    if isinstance(name, DeviceProfile):
        return name
    if not isinstance(name, str) or not name:
        raise InputSpecError(f"a device profile is a name such as 'a100' or 'local', got {name!r}")
    key = name.lower()
    if key in BUILT_IN:
        return BUILT_IN[key]
    if name.endswith(".json") or os.sep in name:
        return _read(Path(name), f"profile file {name!r}")
    stored = profile_folder() / f"{name}.json"
    if _NAME.match(name) and stored.is_file():
        return _read(stored, f"stored profile {name!r} ({stored})")
    known = list(BUILT_IN) + stored_names()
    if name == DEFAULT_PROFILE:
        raise InputSpecError("no profile 'local' yet: run `burden calibrate` to measure this machine, or name "
                             f"a built-in one ({', '.join(BUILT_IN)})")
    raise InputSpecError(f"unknown device profile {name!r}{did_you_mean(name, known)}")


def all_profiles() -> list[DeviceProfile]:
    """The built-in profiles, then the stored ones."""
    return list(BUILT_IN.values()) + [load(n) for n in stored_names()]


def matching(device_name: str) -> str | None:
    """The built-in profile whose device is ``device_name`` (as CUDA names it), if any."""
    words = [w for w in re.split(r"[\s_-]+", device_name.lower()) if w not in ("nvidia", "geforce", "")]
    for name in BUILT_IN:
        if name in words or name == "".join(words[:2]):
            return name
    return None


__all__ = ["BUILT_IN", "DEFAULT_PROFILE", "DeviceProfile", "Roof", "all_profiles", "load", "matching", "save",
           "stored_names", "profile_folder"]
