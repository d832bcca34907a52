"""burden.cuda_policy: each figure derived by hand from the cited PyTorch source, and the autocast table checked
against the installed torch 2.13 wheel (its dispatcher, and CUDA autocast run on fake CUDA tensors)."""

from __future__ import annotations

import importlib
import re
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import pytest

from burden import cuda_policy as cp

MIB = 1024 * 1024


def _installed_torch_is_213() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.__version__.startswith(cp.TORCH_VERSION)


# The tables are 2.13's, read from its source and its wheel: checks against the installed wheel's
# headers, dispatcher and autocast only hold there (the floor and latest tiers run other releases).
on_213 = pytest.mark.skipif(not _installed_torch_is_213(), reason="checks the 2.13 tables against the 2.13 wheel")


# -- A. cuBLAS / cuBLASLt workspaces: CublasHandlePool.cpp (2.13) --------------------------------------------------

def test_default_workspace_per_capability() -> None:
    # parseChosenWorkspaceSize: majors 9, 10, 12 take 4096 * 8 * 1024; others 4096 * 1024 * 2 + 16 * 1024 * 8
    assert cp.cublas_workspace_bytes((9, 0)) == 32 * MIB
    assert cp.cublas_workspace_bytes((10, 0)) == 32 * MIB
    assert cp.cublas_workspace_bytes((12, 0)) == 32 * MIB
    assert cp.cublas_workspace_bytes((8, 0)) == 8_519_680  # the figure of pytorch/pytorch#95668 on an A10G (8.6)
    assert cp.cublas_workspace_bytes((8, 9)) == 8 * MIB + 128 * 1024
    assert cp.cublas_workspace_bytes((7, 5)) == 8_519_680
    assert cp.cublas_workspace_bytes((11, 0)) == 8_519_680  # Thor joins the 32 MiB set after 2.13 (#189312)


def test_workspace_config_pairs_sum() -> None:
    # parseChosenWorkspaceSize: every ":SIZE:COUNT" match adds SIZE KiB * COUNT
    env = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8:16:8"}
    assert cp.cublas_workspace_bytes((8, 0), env) == 4096 * 1024 * 8 + 16 * 1024 * 8
    assert cp.cublas_workspace_bytes((9, 0), {"CUBLAS_WORKSPACE_CONFIG": ":16:8"}) == 128 * 1024
    assert cp.cublas_workspace_bytes((9, 0), {"CUBLAS_WORKSPACE_CONFIG": ":4096:2:16:8"}) == 8_519_680
    # the regex is searched, not matched whole: a dangling ":16" or text around the pairs is ignored
    assert cp.cublas_workspace_bytes((8, 0), {"CUBLAS_WORKSPACE_CONFIG": ":4096:8:16"}) == 32 * MIB
    assert cp.cublas_workspace_bytes((8, 0), {"CUBLAS_WORKSPACE_CONFIG": "x:1:1y"}) == 1024


def test_invalid_workspace_config_keeps_default() -> None:
    # parseChosenWorkspaceSize: no match -> TORCH_WARN "Could not parse ..." and the default; "" is set, not unset
    for bad in ("4096:8", "", ":a:b", "4096"):
        assert cp.cublas_workspace_bytes((9, 0), {"CUBLAS_WORKSPACE_CONFIG": bad}) == 32 * MIB
        assert cp.cublas_workspace_bytes((8, 0), {"CUBLAS_WORKSPACE_CONFIG": bad}) == 8_519_680
    assert cp.parse_cublas_workspace_config("4096:8") is None
    with pytest.raises(ValueError):  # std::stoull throws out_of_range, uncaught by torch
        cp.parse_cublas_workspace_config(":99999999999999999999999:1")


def test_zero_workspace_allocates_nothing() -> None:
    # ":0:0" sums to 0; CUDACachingAllocator allocate(0) skips malloc, so no block is kept
    env = {"CUBLAS_WORKSPACE_CONFIG": ":0:0"}
    assert cp.cublas_workspace_bytes((9, 0), env) == 0
    assert cp.matmul_workspaces((9, 0), env) == ()


def test_check_env_flag() -> None:
    # c10/util/env.cpp check_env: "1" -> true, "0" -> false, else nullopt
    assert cp.check_env_flag("1") is True
    assert cp.check_env_flag("0") is False
    assert cp.check_env_flag("true") is None
    assert cp.check_env_flag(None) is None


def test_cublaslt_unified_by_default() -> None:
    # unified_cublas_and_lt_workspaces: (unset) || true; only "0" separates
    assert cp.cublaslt_workspace_is_unified({})
    assert cp.cublaslt_workspace_is_unified({"TORCH_CUBLASLT_UNIFIED_WORKSPACE": "1"})
    assert cp.cublaslt_workspace_is_unified({"TORCH_CUBLASLT_UNIFIED_WORKSPACE": "yes"})
    assert not cp.cublaslt_workspace_is_unified({"TORCH_CUBLASLT_UNIFIED_WORKSPACE": "0"})


def test_cublaslt_size() -> None:
    # parseCUDABlasLtWorkspaceSize: 1024 KiB default, CUBLASLT_WORKSPACE_SIZE in KiB via std::stoi;
    # getCUDABlasLtWorkspaceSize caps it at the cuBLAS size when unified
    assert cp.cublaslt_workspace_bytes((9, 0)) == 1 * MIB
    assert cp.cublaslt_workspace_bytes((9, 0), {"CUBLASLT_WORKSPACE_SIZE": "4096"}) == 4 * MIB
    assert cp.cublaslt_workspace_bytes((9, 0), {"CUBLASLT_WORKSPACE_SIZE": "65536"}) == 32 * MIB  # capped
    separate = {"CUBLASLT_WORKSPACE_SIZE": "65536", "TORCH_CUBLASLT_UNIFIED_WORKSPACE": "0"}
    assert cp.cublaslt_workspace_bytes((9, 0), separate) == 64 * MIB
    assert cp.cublaslt_workspace_bytes((9, 0), {"CUBLASLT_WORKSPACE_SIZE": "2048abc"}) == 2 * MIB  # stoi prefix
    assert cp.cublaslt_workspace_bytes((9, 0), {"CUBLASLT_WORKSPACE_SIZE": "abc"}) == 1 * MIB  # invalid_argument
    assert cp.cublaslt_workspace_bytes((9, 0), {"CUBLASLT_WORKSPACE_SIZE": "9" * 12}) == 1 * MIB  # out_of_range
    # a :16:8 cuBLAS workspace (128 KiB) caps the unified Lt size below its 1 MiB default
    assert cp.cublaslt_workspace_bytes((9, 0), {"CUBLAS_WORKSPACE_CONFIG": ":16:8"}) == 128 * 1024


def test_matmul_workspaces_default_one_shared_block() -> None:
    # unified: getCUDABlasLtWorkspace returns the cuBLAS block of the same (handle, stream) key
    assert cp.matmul_workspaces((9, 0)) == (("cublas_workspace", 32 * MIB),)
    assert cp.matmul_workspaces((8, 0), cublas=False) == (("cublas_workspace", 8_519_680),)
    assert cp.matmul_workspaces((9, 0), cublas=False, cublaslt=False) == ()
    # one block per (thread handle, stream): a backward on autograd's device thread adds one
    assert cp.matmul_workspaces((9, 0), handles=2) == (("cublas_workspace", 32 * MIB),) * 2


def test_matmul_workspaces_separate_lt() -> None:
    # TORCH_CUBLASLT_UNIFIED_WORKSPACE=0: getNewCUDABlasLtWorkspace allocates getCUDABlasLtWorkspaceSize per key;
    # the Lt handle comes from getCurrentCUDABlasHandle(setup=false), which allocates no cuBLAS block
    env = {"TORCH_CUBLASLT_UNIFIED_WORKSPACE": "0"}
    assert cp.matmul_workspaces((9, 0), env) == (("cublas_workspace", 32 * MIB), ("cublaslt_workspace", MIB))
    assert cp.matmul_workspaces((9, 0), env, cublas=False) == (("cublaslt_workspace", MIB),)
    assert cp.matmul_workspaces((9, 0), env, cublaslt=False) == (("cublas_workspace", 32 * MIB),)


@on_213
def test_workspace_api_in_the_wheel() -> None:
    """The 2.13 wheel carries the API the module describes: size overrides and the unified note."""
    torch = pytest.importorskip("torch")
    from torch.backends import cuda as backends_cuda

    assert torch.__version__.startswith(cp.TORCH_VERSION)
    assert torch.version.git_version == cp.TORCH_COMMIT
    assert "TORCH_CUBLASLT_UNIFIED_WORKSPACE" in (backends_cuda.blas_workspace_size.__doc__ or "")
    assert "defaults to cuBLAS" in (backends_cuda.preferred_blas_library.__doc__ or "")


def test_linear_with_bias_reaches_addmm() -> None:
    """F.linear with a bias calls addmm (the cuBLASLt candidate) for 2-D and contiguous n-D inputs, mm without."""
    torch = pytest.importorskip("torch")
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: list[str] = []

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            self.names.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    w, b = torch.randn(16, 8), torch.randn(16)
    for x, expected in ((torch.randn(4, 8), "addmm"), (torch.randn(2, 3, 4, 8), "addmm"),
                        (torch.randn(4, 2, 8).transpose(0, 1), "bmm")):
        with Ops() as ops:
            torch.nn.functional.linear(x, w, b)
        assert expected in ops.names
    x = torch.randn(4, 8)
    with Ops() as ops:
        torch.nn.functional.linear(x, w)
    assert "mm" in ops.names and "addmm" not in ops.names


# -- B. CUDA autocast: ATen/autocast_mode.h (2.13) ----------------------------------------------------------------

def _owner(name: str) -> Any:
    import torch

    return torch.Tensor if name == "torch.Tensor" else importlib.import_module(name)


def test_table_contains_source_rules() -> None:
    table = set(cp.CUDA_AUTOCAST)
    for entry in (("torch.nn.functional", "linear", "low"), ("torch", "matmul", "low"),
                  ("torch.Tensor", "__matmul__", "low"), ("torch.Tensor", "__rmatmul__", "low"),
                  ("torch.nn.functional", "scaled_dot_product_attention", "low"),
                  ("torch.nn.functional", "softmax", "float32_opt_dtype"),
                  ("torch.Tensor", "softmax", "float32_opt_dtype"),
                  ("torch.Tensor", "log_softmax", "float32_opt_dtype"),
                  ("torch", "sum", "float32_opt_dtype"), ("torch.nn.functional", "layer_norm", "float32"),
                  ("torch.nn.functional", "group_norm", "float32"), ("torch.nn.functional", "rms_norm", "float32"),
                  ("torch.nn.functional", "cross_entropy", "float32"), ("torch.Tensor", "exp", "float32"),
                  ("torch.Tensor", "__pow__", "float32"), ("torch.Tensor", "__rpow__", "float32"),
                  ("torch", "addcmul", "promote"), ("torch.nn.functional", "bilinear", "promote")):
        assert entry in table, entry
    assert not {(o, n) for o, n, _ in cp.CUDA_AUTOCAST} & set(cp.CUDA_AUTOCAST_BANNED)
    assert len({(o, n) for o, n, _ in cp.CUDA_AUTOCAST}) == len(cp.CUDA_AUTOCAST)
    assert {o for o, _, _ in cp.CUDA_AUTOCAST} <= set(cp.OWNERS)
    assert {p for _, _, p in cp.CUDA_AUTOCAST} == {cp.LOW, cp.FLOAT32, cp.PROMOTE, cp.FLOAT32_OPT_DTYPE}


def test_every_entry_exists() -> None:
    pytest.importorskip("torch")
    entries = [(o, n) for o, n, _ in cp.CUDA_AUTOCAST]
    entries += list(cp.CUDA_AUTOCAST_BANNED) + list(cp.CUDA_AUTOCAST_CUDNN_RNN)
    assert [e for e in entries if not hasattr(_owner(e[0]), e[1])] == []


@on_213
def test_ops_match_the_dispatcher() -> None:
    """Every op with an AutocastCUDA kernel in the 2.13 wheel, and no other, is in CUDA_AUTOCAST_OPS (the CPU wheel
    compiles autocast_mode.cpp; only cuDNN's AutocastRNN.cpp is missing from it)."""
    torch = pytest.importorskip("torch")
    dispatcher = torch._C
    registered = {op.removeprefix("aten::") for op in dispatcher._dispatch_get_all_op_names()
                  if dispatcher._dispatch_has_kernel_for_dispatch_key(op, "AutocastCUDA")}
    listed = [op for ops in cp.CUDA_AUTOCAST_OPS.values() for op in ops]
    assert len(listed) == len(set(listed))
    assert set(listed) == registered


@on_213
def test_ops_match_the_header() -> None:
    """CUDA_AUTOCAST_OPS copies the AT_FORALL_* macros of the installed 2.13 autocast_mode.h."""
    torch = pytest.importorskip("torch")
    from pathlib import Path

    header = Path(torch.__file__).parent / "include" / "ATen" / "autocast_mode.h"
    if not header.exists():
        pytest.skip("the wheel has no headers")
    text = header.read_text()

    def macro(name: str) -> list[str]:
        body = text.split(f"#define {name}(_)", 1)[1].split("\n\n", 1)[0]
        return [".".join(p.strip() for p in m.split(",")) for m in re.findall(r"_\(([\w, ]+)\)", body)]

    assert macro("AT_FORALL_LOWER_PRECISION_FP") == list(cp.CUDA_AUTOCAST_OPS["lower_precision_fp"][:-2])
    assert macro("AT_FORALL_FP32") == list(cp.CUDA_AUTOCAST_OPS["fp32"])
    assert macro("AT_FORALL_FP32_SET_OPT_DTYPE") == list(cp.CUDA_AUTOCAST_OPS["fp32_set_opt_dtype"])
    assert macro("AT_FORALL_PROMOTE") == list(cp.CUDA_AUTOCAST_OPS["promote"])
    redispatch = text.split("#define AT_FORALL_DIFFERENT_REDISPATCH_SIGNATURE(_)", 1)[1].split("#define", 1)[0]
    assert re.findall(r'"([\w.]+)"', redispatch) == list(cp.CUDA_AUTOCAST_OPS["fp32_append_dtype"])


@contextmanager
def _cuda_autocast(dtype: Any) -> Iterator[Callable[..., Any]]:
    """CUDA autocast on fake CUDA tensors: the wheel has no CUDA, but the AutocastCUDA kernels are compiled in and
    fake tensors on device "cuda" carry the key. No tensor may require grad (autograd then asks for a CUDA device
    guard and aborts the process)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        def make(*shape: int, dtype: Any = torch.float32) -> Any:
            return torch.ones(*shape, device="cuda", dtype=dtype)

        torch.set_autocast_enabled("cuda", True)
        previous = torch.get_autocast_dtype("cuda")
        torch.set_autocast_dtype("cuda", dtype)
        torch.autocast_increment_nesting()
        try:
            yield make
        finally:
            if torch.autocast_decrement_nesting() == 0:
                torch.clear_autocast_cache()
            torch.set_autocast_dtype("cuda", previous)
            torch.set_autocast_enabled("cuda", False)


def _calls(t: Callable[..., Any], f: Any, torch: Any) -> dict[tuple[str, str], Callable[[Any], Any]]:
    """One call per (owner, name); ``d`` is the dtype of the floating inputs."""
    long = torch.long

    def unary(name: str, owner: str) -> Callable[[Any], Any]:
        if owner == "torch.Tensor":
            return lambda d: getattr(t(3, 4, dtype=d), name)()
        return lambda d: getattr(_owner(owner), name)(t(3, 4, dtype=d))

    calls: dict[tuple[str, str], Callable[[Any], Any]] = {}
    for owner in ("torch", "torch.Tensor"):
        for name in ("acos arccos asin arcsin cosh erfinv exp expm1 log log10 log2 log1p reciprocal rsqrt sinh tan "
                     "prod sum norm").split():
            calls[(owner, name)] = unary(name, owner)
        for name in ("logsumexp", "softmax", "log_softmax", "cumprod", "cumsum"):
            calls[(owner, name)] = (lambda n, o: lambda d: (getattr(t(3, 4, dtype=d), n)(1) if o == "torch.Tensor"
                                                            else getattr(torch, n)(t(3, 4, dtype=d), 1)))(name, owner)
    calls.update({
        ("torch", "conv1d"): lambda d: torch.conv1d(t(1, 2, 8, dtype=d), t(3, 2, 3, dtype=d)),
        ("torch", "conv2d"): lambda d: torch.conv2d(t(1, 2, 8, 8, dtype=d), t(3, 2, 3, 3, dtype=d)),
        ("torch", "conv3d"): lambda d: torch.conv3d(t(1, 2, 4, 4, 4, dtype=d), t(3, 2, 2, 2, 2, dtype=d)),
        ("torch", "conv_tbc"): lambda d: torch.conv_tbc(t(5, 1, 2, dtype=d), t(3, 2, 4, dtype=d), t(4, dtype=d)),
        ("torch", "conv_transpose1d"): lambda d: torch.conv_transpose1d(t(1, 2, 8, dtype=d), t(2, 3, 3, dtype=d)),
        ("torch", "conv_transpose2d"): lambda d: torch.conv_transpose2d(t(1, 2, 4, 4, dtype=d), t(2, 3, 3, 3, dtype=d)),
        ("torch", "conv_transpose3d"): lambda d: torch.conv_transpose3d(t(1, 2, 3, 3, 3, dtype=d),
                                                                        t(2, 3, 2, 2, 2, dtype=d)),
        ("torch", "convolution"): lambda d: torch.convolution(t(1, 2, 8, 8, dtype=d), t(3, 2, 3, 3, dtype=d), None,
                                                              [1, 1], [0, 0], [1, 1], False, [0, 0], 1),
        ("torch", "prelu"): lambda d: torch.prelu(t(2, 3, dtype=d), t(1, dtype=d)),
        ("torch", "addmm"): lambda d: torch.addmm(t(4, 5, dtype=d), t(4, 3, dtype=d), t(3, 5, dtype=d)),
        ("torch", "addmv"): lambda d: torch.addmv(t(4, dtype=d), t(4, 3, dtype=d), t(3, dtype=d)),
        ("torch", "addr"): lambda d: torch.addr(t(4, 5, dtype=d), t(4, dtype=d), t(5, dtype=d)),
        ("torch", "matmul"): lambda d: torch.matmul(t(4, 3, dtype=d), t(3, 5, dtype=d)),
        ("torch", "einsum"): lambda d: torch.einsum("ij,jk->ik", t(4, 3, dtype=d), t(3, 5, dtype=d)),
        ("torch", "mm"): lambda d: torch.mm(t(4, 3, dtype=d), t(3, 5, dtype=d)),
        ("torch", "mv"): lambda d: torch.mv(t(4, 3, dtype=d), t(3, dtype=d)),
        ("torch", "addbmm"): lambda d: torch.addbmm(t(4, 5, dtype=d), t(2, 4, 3, dtype=d), t(2, 3, 5, dtype=d)),
        ("torch", "baddbmm"): lambda d: torch.baddbmm(t(2, 4, 5, dtype=d), t(2, 4, 3, dtype=d), t(2, 3, 5, dtype=d)),
        ("torch", "bmm"): lambda d: torch.bmm(t(2, 4, 3, dtype=d), t(2, 3, 5, dtype=d)),
        ("torch", "chain_matmul"): lambda d: torch.chain_matmul(t(4, 3, dtype=d), t(3, 5, dtype=d), t(5, 2, dtype=d)),
        ("torch", "lstm_cell"): lambda d: torch.lstm_cell(t(2, 4, dtype=d), (t(2, 3, dtype=d), t(2, 3, dtype=d)),
                                                          t(12, 4, dtype=d), t(12, 3, dtype=d), t(12, dtype=d),
                                                          t(12, dtype=d))[0],
        ("torch", "gru_cell"): lambda d: torch.gru_cell(t(2, 4, dtype=d), t(2, 3, dtype=d), t(9, 4, dtype=d),
                                                        t(9, 3, dtype=d), t(9, dtype=d), t(9, dtype=d)),
        ("torch", "rnn_tanh_cell"): lambda d: torch.rnn_tanh_cell(t(2, 4, dtype=d), t(2, 3, dtype=d),
                                                                  t(3, 4, dtype=d), t(3, 3, dtype=d)),
        ("torch", "rnn_relu_cell"): lambda d: torch.rnn_relu_cell(t(2, 4, dtype=d), t(2, 3, dtype=d),
                                                                  t(3, 4, dtype=d), t(3, 3, dtype=d)),
        ("torch.linalg", "vecdot"): lambda d: torch.linalg.vecdot(t(3, 4, dtype=d), t(3, 4, dtype=d)),
        ("torch.linalg", "multi_dot"): lambda d: torch.linalg.multi_dot([t(4, 3, dtype=d), t(3, 5, dtype=d)]),
        ("torch.nn.functional", "linear"): lambda d: f.linear(t(4, 8, dtype=d), t(16, 8, dtype=d), t(16, dtype=d)),
        ("torch.nn.functional", "prelu"): lambda d: f.prelu(t(2, 3, dtype=d), t(1, dtype=d)),
        ("torch.nn.functional", "scaled_dot_product_attention"):
            lambda d: f.scaled_dot_product_attention(t(1, 2, 4, 8, dtype=d), t(1, 2, 4, 8, dtype=d),
                                                     t(1, 2, 4, 8, dtype=d)),
        ("torch.Tensor", "matmul"): lambda d: t(4, 3, dtype=d).matmul(t(3, 5, dtype=d)),
        ("torch.Tensor", "__matmul__"): lambda d: t(4, 3, dtype=d) @ t(3, 5, dtype=d),
        ("torch.Tensor", "__rmatmul__"): lambda d: t(3, 5, dtype=d).__rmatmul__(t(4, 3, dtype=d)),
        ("torch.Tensor", "mm"): lambda d: t(4, 3, dtype=d).mm(t(3, 5, dtype=d)),
        ("torch.Tensor", "mv"): lambda d: t(4, 3, dtype=d).mv(t(3, dtype=d)),
        ("torch.Tensor", "bmm"): lambda d: t(2, 4, 3, dtype=d).bmm(t(2, 3, 5, dtype=d)),
        ("torch.Tensor", "addmm"): lambda d: t(4, 5, dtype=d).addmm(t(4, 3, dtype=d), t(3, 5, dtype=d)),
        ("torch.Tensor", "addmv"): lambda d: t(4, dtype=d).addmv(t(4, 3, dtype=d), t(3, dtype=d)),
        ("torch.Tensor", "addr"): lambda d: t(4, 5, dtype=d).addr(t(4, dtype=d), t(5, dtype=d)),
        ("torch.Tensor", "addbmm"): lambda d: t(4, 5, dtype=d).addbmm(t(2, 4, 3, dtype=d), t(2, 3, 5, dtype=d)),
        ("torch.Tensor", "baddbmm"): lambda d: t(2, 4, 5, dtype=d).baddbmm(t(2, 4, 3, dtype=d), t(2, 3, 5, dtype=d)),
        ("torch", "pow"): lambda d: torch.pow(t(3, dtype=d), 2),
        ("torch.Tensor", "pow"): lambda d: t(3, dtype=d).pow(t(3, dtype=d)),
        ("torch.Tensor", "__pow__"): lambda d: t(3, dtype=d) ** 2,
        ("torch.Tensor", "__rpow__"): lambda d: 2 ** t(3, dtype=d),
        ("torch", "layer_norm"): lambda d: torch.layer_norm(t(2, 4, dtype=d), [4]),
        ("torch", "native_layer_norm"): lambda d: torch.native_layer_norm(t(2, 4, dtype=d), [4], None, None, 1e-5)[0],
        ("torch", "rms_norm"): lambda d: torch.rms_norm(t(2, 4, dtype=d), [4]),
        ("torch", "group_norm"): lambda d: torch.group_norm(t(2, 4, 3, dtype=d), 2),
        ("torch", "frobenius_norm"): lambda d: torch.frobenius_norm(t(3, 4, dtype=d), [0, 1]),
        ("torch", "nuclear_norm"): lambda d: torch.nuclear_norm(t(3, 4, dtype=d)),
        ("torch", "cosine_similarity"): lambda d: torch.cosine_similarity(t(3, 4, dtype=d), t(3, 4, dtype=d)),
        ("torch", "dist"): lambda d: torch.dist(t(3, dtype=d), t(3, dtype=d)),
        ("torch.Tensor", "dist"): lambda d: t(3, dtype=d).dist(t(3, dtype=d)),
        ("torch", "pdist"): lambda d: torch.pdist(t(3, 4, dtype=d)),
        ("torch", "cdist"): lambda d: torch.cdist(t(3, 4, dtype=d), t(2, 4, dtype=d)),
        ("torch", "renorm"): lambda d: torch.renorm(t(3, 4, dtype=d), 2, 0, 1.0),
        ("torch.Tensor", "renorm"): lambda d: t(3, 4, dtype=d).renorm(2, 0, 1.0),
        ("torch.nn.functional", "softplus"): lambda d: f.softplus(t(3, dtype=d)),
        ("torch.nn.functional", "layer_norm"): lambda d: f.layer_norm(t(2, 4, dtype=d), (4,)),
        ("torch.nn.functional", "rms_norm"): lambda d: f.rms_norm(t(2, 4, dtype=d), (4,)),
        ("torch.nn.functional", "group_norm"): lambda d: f.group_norm(t(2, 4, 3, dtype=d), 2),
        ("torch.nn.functional", "cosine_similarity"): lambda d: f.cosine_similarity(t(3, 4, dtype=d), t(3, 4, dtype=d)),
        ("torch.nn.functional", "pdist"): lambda d: f.pdist(t(3, 4, dtype=d)),
        ("torch.nn.functional", "cross_entropy"): lambda d: f.cross_entropy(t(3, 5, dtype=d), t(3, dtype=long)),
        ("torch.nn.functional", "nll_loss"): lambda d: f.nll_loss(t(3, 5, dtype=d), t(3, dtype=long)),
        ("torch.nn.functional", "multilabel_margin_loss"):
            lambda d: f.multilabel_margin_loss(t(3, 5, dtype=d), t(3, 5, dtype=long)),
        ("torch.nn.functional", "multi_margin_loss"): lambda d: f.multi_margin_loss(t(3, 5, dtype=d), t(3, dtype=long)),
        ("torch.nn.functional", "cosine_embedding_loss"):
            lambda d: f.cosine_embedding_loss(t(3, 4, dtype=d), t(3, 4, dtype=d), t(3, dtype=d)),
        ("torch", "cosine_embedding_loss"):
            lambda d: torch.cosine_embedding_loss(t(3, 4, dtype=d), t(3, 4, dtype=d), t(3, dtype=d)),
        ("torch.nn.functional", "margin_ranking_loss"):
            lambda d: f.margin_ranking_loss(t(3, dtype=d), t(3, dtype=d), t(3, dtype=d)),
        ("torch", "margin_ranking_loss"):
            lambda d: torch.margin_ranking_loss(t(3, dtype=d), t(3, dtype=d), t(3, dtype=d)),
        ("torch.nn.functional", "triplet_margin_loss"):
            lambda d: f.triplet_margin_loss(t(3, 4, dtype=d), t(3, 4, dtype=d), t(3, 4, dtype=d)),
        ("torch", "triplet_margin_loss"):
            lambda d: torch.triplet_margin_loss(t(3, 4, dtype=d), t(3, 4, dtype=d), t(3, 4, dtype=d)),
        ("torch.nn.functional", "interpolate"): lambda d: f.interpolate(t(1, 2, 4, 4, dtype=d), scale_factor=2.0),
        ("torch.nn.functional", "upsample"): lambda d: f.upsample(t(1, 2, 4, 4, dtype=d), scale_factor=2.0),
        ("torch.nn.functional", "upsample_nearest"):
            lambda d: f.upsample_nearest(t(1, 2, 4, 4, dtype=d), scale_factor=2),
        ("torch.nn.functional", "upsample_bilinear"):
            lambda d: f.upsample_bilinear(t(1, 2, 4, 4, dtype=d), scale_factor=2),
        ("torch.nn.functional", "softmax"): lambda d: f.softmax(t(3, 4, dtype=d), -1),
        ("torch.nn.functional", "log_softmax"): lambda d: f.log_softmax(t(3, 4, dtype=d), -1),
        ("torch.nn.functional", "softmin"): lambda d: f.softmin(t(3, 4, dtype=d), -1),
        ("torch.linalg", "vector_norm"): lambda d: torch.linalg.vector_norm(t(3, 4, dtype=d)),
        ("torch.linalg", "matrix_norm"): lambda d: torch.linalg.matrix_norm(t(3, 4, dtype=d)),
        ("torch.linalg", "norm"): lambda d: torch.linalg.norm(t(3, 4, dtype=d)),
    })
    for name in ("poisson_nll_loss", "hinge_embedding_loss", "kl_div", "binary_cross_entropy_with_logits"):
        for owner in ("torch", "torch.nn.functional"):
            calls[(owner, name)] = (lambda fn: lambda d: fn(t(3, 4, dtype=d), t(3, 4, dtype=d)))(
                getattr(_owner(owner), name))
    conv_args = {"conv1d": ((1, 2, 8), (3, 2, 3)), "conv2d": ((1, 2, 8, 8), (3, 2, 3, 3)),
                 "conv3d": ((1, 2, 4, 4, 4), (3, 2, 2, 2, 2)), "conv_tbc": ((5, 1, 2), (3, 2, 4), (4,)),
                 "conv_transpose1d": ((1, 2, 8), (2, 3, 3)), "conv_transpose2d": ((1, 2, 4, 4), (2, 3, 3, 3)),
                 "conv_transpose3d": ((1, 2, 3, 3, 3), (2, 3, 2, 2, 2))}
    for name, shapes in conv_args.items():
        calls[("torch.nn.functional", name)] = (lambda fn, shapes: lambda d: fn(*(t(*s, dtype=d) for s in shapes)))(
            getattr(f, name), shapes)
    calls[("torch", "poisson_nll_loss")] = lambda d: torch.poisson_nll_loss(t(3, 4, dtype=d), t(3, 4, dtype=d),
                                                                          True, False, 1e-8, 1)
    for name in ("l1_loss", "smooth_l1_loss", "huber_loss", "mse_loss", "soft_margin_loss"):
        calls[("torch.nn.functional", name)] = (lambda fn: lambda d: fn(t(3, 4, dtype=d), t(3, 4, dtype=d)))(
            getattr(f, name))
    return calls


def _promote_calls(t: Callable[..., Any], f: Any, torch: Any, low: Any) -> dict[tuple[str, str], Callable[[], Any]]:
    """Calls mixing a low-precision and a float32 input: promote runs them in float32."""
    hi = torch.float32
    long = torch.long
    calls: dict[tuple[str, str], Callable[[], Any]] = {}
    for owner in ("torch", "torch.Tensor"):
        def call(name: str, *args: Any, owner: str = owner) -> Callable[[], Any]:
            if owner == "torch.Tensor":
                return lambda: getattr(args[0](), name)(*(a() for a in args[1:]))
            return lambda: getattr(torch, name)(*(a() for a in args))

        for name in ("addcdiv", "addcmul"):
            calls[(owner, name)] = call(name, lambda: t(3, dtype=low), lambda: t(3, dtype=hi), lambda: t(3, dtype=low))
        calls[(owner, "atan2")] = call("atan2", lambda: t(3, dtype=low), lambda: t(3, dtype=hi))
        calls[(owner, "arctan2")] = call("arctan2", lambda: t(3, dtype=low), lambda: t(3, dtype=hi))
        calls[(owner, "cross")] = call("cross", lambda: t(2, 3, dtype=low), lambda: t(2, 3, dtype=hi), lambda: 1)
        calls[(owner, "dot")] = call("dot", lambda: t(3, dtype=low), lambda: t(3, dtype=hi))
        calls[(owner, "vdot")] = call("vdot", lambda: t(3, dtype=low), lambda: t(3, dtype=hi))
        calls[(owner, "index_put")] = call("index_put", lambda: t(5, dtype=low), lambda: (t(2, dtype=long),),
                                           lambda: t(2, dtype=hi))
        calls[(owner, "scatter_add")] = call("scatter_add", lambda: t(5, dtype=low), lambda: 0,
                                             lambda: t(2, dtype=long), lambda: t(2, dtype=hi))
    calls[("torch", "bilinear")] = lambda: torch.bilinear(t(2, 3, dtype=low), t(2, 4, dtype=hi), t(5, 3, 4, dtype=hi))
    calls[("torch.nn.functional", "bilinear")] = lambda: f.bilinear(t(2, 3, dtype=low), t(2, 4, dtype=hi),
                                                                    t(5, 3, 4, dtype=hi))
    calls[("torch", "tensordot")] = lambda: torch.tensordot(t(3, 4, dtype=low), t(4, 5, dtype=hi), dims=1)
    calls[("torch", "grid_sampler")] = lambda: torch.grid_sampler(t(1, 2, 4, 4, dtype=low), t(1, 3, 3, 2, dtype=hi),
                                                                  0, 0, False)
    calls[("torch.nn.functional", "grid_sample")] = lambda: f.grid_sample(t(1, 2, 4, 4, dtype=low),
                                                                          t(1, 3, 3, 2, dtype=hi), align_corners=False)
    return calls


@on_213
@pytest.mark.filterwarnings("ignore::UserWarning")  # deprecations of chain_matmul, F.upsample*, kl_div's "mean"
@pytest.mark.parametrize("low_name", ["bfloat16", "float16"])
def test_policies_hold_under_cuda_autocast(low_name: str) -> None:
    """Each listed entry behaves as its policy says under CUDA autocast in the 2.13 wheel."""
    torch = pytest.importorskip("torch")
    f = torch.nn.functional
    low = getattr(torch, low_name)
    unchecked: list[tuple[str, str]] = []
    not_runnable: list[tuple[str, str]] = []
    with _cuda_autocast(low) as t:
        calls = _calls(t, f, torch)
        promote = _promote_calls(t, f, torch, low)
        for owner, name, policy in cp.CUDA_AUTOCAST:
            if policy == cp.PROMOTE:
                call, expected = promote.get((owner, name)), torch.float32
            else:
                single = calls.get((owner, name))
                call = None if single is None else (lambda c=single, p=policy: c(torch.float32 if p == cp.LOW else low))
                expected = low if policy == cp.LOW else torch.float32
            if call is None:
                unchecked.append((owner, name))
                continue
            try:
                out = call()
            except (NotImplementedError, AssertionError, RuntimeError) as error:
                # no meta kernel, or a decomposition that needs a CUDA device guard: not runnable on fake tensors
                assert re.search("no fake impl|not compiled with CUDA|not linked with support for cuda", str(error))
                not_runnable.append((owner, name))
                continue
            assert out.dtype == expected, (owner, name)
        with pytest.raises(RuntimeError, match="unsafe to autocast"):
            f.binary_cross_entropy(t(3, dtype=low), t(3, dtype=low))
        # fp32_set_opt_dtype keeps a dtype the caller passed
        assert f.softmax(t(3, 4, dtype=low), -1, dtype=low).dtype == low
        assert t(3, 4, dtype=low).sum(dtype=low).dtype == low
        assert torch.linalg.vector_norm(t(3, 4, dtype=low), dtype=low).dtype == low
        # ops outside the lists keep their input dtype (cat is promote on CPU only)
        assert f.gelu(t(3, dtype=low)).dtype == low
        assert t(3, dtype=low).mean().dtype == low
        assert torch.cat([t(3, dtype=low), t(3, dtype=low)]).dtype == low
        # "area" interpolation is adaptive_avg_pool, not an upsample op
        assert f.interpolate(t(1, 2, 4, 4, dtype=low), size=(2, 2), mode="area").dtype == low
    assert unchecked == []
    # _thnn_fused_gru_cell has no meta kernel in 2.13; grid_sampler_2d's decomposition makes tensors on the device
    assert not_runnable == [("torch", "gru_cell"), ("torch", "grid_sampler"), ("torch.nn.functional", "grid_sample")]


def test_cpu_policy_differs_where_documented() -> None:
    """burden/autocast.py's CPU table against this one: the float32 ops of CUDA that CPU leaves in low precision."""
    pytest.importorskip("torch")
    from burden import autocast as cpu

    cpu_names = {(o.__name__ if isinstance(o, type) else o.__name__, n): p for o, n, p in cpu._ENTRY_POINTS}
    cuda_names = {(o if o != "torch.Tensor" else "Tensor", n): p for o, n, p in cp.CUDA_AUTOCAST}
    for key in (("torch.nn.functional", "softmax"), ("torch.nn.functional", "layer_norm"), ("Tensor", "exp")):
        assert key in cuda_names and key not in cpu_names
    assert ("torch", "cat") in cpu_names and ("torch", "cat") not in cuda_names
