"""Every convention's rules in words: what the reports print and ``burden conventions`` lists.

Plain text, apart from the formula tables so that the command line can show the rules without
importing torch. Each convention module takes its words from here; nothing else defines them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Words:
    summary: str
    rules: tuple[tuple[str, str], ...] = ()  # (what, how it counts)


# FLOP conventions, in the order users see them; the first is the default
FLOPS: dict[str, Words] = {
    "convnet-burden": Words(
        summary="The rules of the MATLAB convnet-burden tool that produced the SE reference table: "
                "a multiply-add is one FLOP, every layer output is a new buffer, ReLU runs in place.",
        rules=(
            ("convolution", "out_elements x (C_in / groups x k_h x k_w), plus out_elements with a bias"),
            ("linear, matmul", "out_elements x in_features, plus out_elements with a bias"),
            ("ReLU", "2 per element; runs in place, adds no buffer"),
            ("pooling with a window", "2 x out_elements x stride_h x stride_w"),
            ("global average pooling", "1 per input element"),
            ("batch norm", "0 (folded into the convolution); its output is a buffer"),
            ("residual sum, channel-wise scale", "1 per output element"),
            ("attention (fused kernels)", "as its math path: Q K^T and A V multiply-adds, 1 per element of Q and K "
                                          "for the scale, 1 per score for a mask; softmax 0"),
            ("fused scale + sum (Axpy)", "2 per output element, one buffer: addcmul, or a channel-wise "
                                         "scale whose only use is the sum that follows it"),
            ("sigmoid, softmax, concat, copies, lookups (embedding)", "0 FLOPs; their outputs are buffers"),
            ("views, flatten, dropout", "0 FLOPs, no buffer"),
            ("feature memory", "every layer output, never reused; the input image is not counted"),
            ("parameter memory", "parameters and floating-point buffers (BN running stats), shared ones once"),
            ("anything else", "uncounted: 0 FLOPs, listed by name; its output memory still counts"),
        )),
    "macs": Words(
        summary="Multiply-accumulates of convolution, linear, matmul, bmm, einsum and attention only, the "
                "figure most tools print as 'FLOPs' or 'MACs'. Everything else costs 0.",
        rules=(
            ("convolution", "out_elements x (C_in / groups x k_h x k_w); no bias"),
            ("linear, mm, bmm, matmul, einsum", "out_elements x inner dimension; no bias"),
            ("attention (fused)", "Q K^T and A V multiply-adds"),
            ("everything else", "0"),
        )),
    "fvcore": Words(
        summary="Exactly what fvcore.nn.FlopCountAnalysis reports, total and per module, computed by fvcore "
                "itself (one multiply-add = 1; it also counts batch norm, upsampling and some pooling).",
        rules=(
            ("convolution, linear, matmul, einsum", "multiply-adds, no bias (fvcore's handles)"),
            ("batch norm, group/layer norm, upsample, adaptive pooling", "fvcore's own element-wise rules"),
            ("ops fvcore has no handle for", "uncounted, as fvcore lists them"),
            ("cost", "a real forward pass on the CPU: fvcore's JIT trace cannot use the meta device"),
        )),
    "torch": Words(
        summary="Exactly the total of PyTorch's torch.utils.flop_counter.FlopCounterMode on the meta device, "
                "where burden traces: 2 FLOPs per multiply-add, for matmul-like ops (mm, addmm, bmm, baddbmm, "
                "convolution, attention) only. On real CPU tensors FlopCounterMode counts fused CPU attention "
                "and LSTM kernels as 0.",
        rules=(
            ("convolution", "2 x out_elements x (C_in / groups x k_h x k_w); no bias"),
            ("mm, addmm, bmm, baddbmm", "2 x out_elements x inner dimension; no bias"),
            ("attention (fused)", "2 x the multiply-adds of Q K^T and A V, the fused CPU kernel included"),
            ("everything else", "0, as FlopCounterMode"),
        )),
    "roofline": Words(
        summary="Real floating-point operations, the FLOPs a roofline divides by a device's peak: 2 per "
                "multiply-add as in the torch convention, with bias additions, element-wise ops, "
                "normalisation, softmax, reductions and pooling counted too.",
        rules=(
            ("convolution, mm, addmm, bmm, attention", "as the torch convention (2 per multiply-add), plus 1 per "
                                                       "output element for a bias"),
            ("element-wise ops (PyTorch's pointwise tag: add, mul, ReLU, sigmoid, GELU, ...)",
             "1 per output element, a transcendental (exp, tanh, erf) included"),
            ("batch norm with running statistics", "2 per element (scale and shift)"),
            ("batch norm with batch statistics, layer norm, group norm",
             "5 per element (mean, variance as a multiply-add, normalise, scale and shift)"),
            ("softmax, log-softmax", "5 per element (max, subtract, exp, sum, divide or log)"),
            ("sum, mean, max, var, norm and other reductions", "1 per input element"),
            ("max or average pooling with a window", "k_h x k_w per output element"),
            ("adaptive pooling", "1 per input element"),
            ("linear, bilinear, trilinear, bicubic upsampling", "4, 8, 16, 32 per output element (2 per "
                                                                 "neighbour); nearest 0 (a copy)"),
            ("views, copies, concat, padding, lookups, factories", "0 FLOPs; their bytes still move"),
            ("anything else", "uncounted: 0 FLOPs, listed by name; its bytes still move"),
        )),
}

# what each op moves to and from memory, the other half of a roofline (``bytes_moved``)
TRAFFIC: tuple[tuple[str, str], ...] = (
    ("an op", "reads each distinct tensor argument once (weights included) and writes each output, every "
              "value at the analysis dtype's size (mixed precision: its own dtype's)"),
    ("views (view, reshape as a view, permute, transpose, expand, slice...)", "0: nothing moves"),
    ("in-place ops (relu_, add_)", "read their arguments and write the result over the first"),
    ("ops that only overwrite (copy_, fill_, zero_)", "write their output; copy_ reads its source"),
    ("a module", "the sum over the ops it runs, its submodules' included"),
    ("arithmetic intensity", "roofline FLOPs / bytes moved"),
)

# how a device profile turns FLOPs and bytes into a time (``device_profile=``)
LATENCY: tuple[tuple[str, str], ...] = (
    ("an op", "max(FLOPs / peak FLOP/s at its dtype, bytes moved / bandwidth): compute-bound when the first "
              "term is larger, memory-bound otherwise"),
    ("bandwidth", "the cache roof when the op's bytes fit in the profile's cache size, main memory otherwise"),
    ("a module", "the sum of its ops' times: ops run one after another, as in eager PyTorch; it is "
                 "compute-bound when its compute-bound ops take most of that time"),
    ("the model", "the sum over every op; samples/s = batch / that time"),
    ("what it means", "a lower bound on time (an upper bound on throughput), not a promise: real kernels "
                      "reach a fraction of the peaks, and launch and framework overheads come on top"),
)

# convnet-burden's rules for the ops autograd runs in a training step
BACKWARD: tuple[tuple[str, str], ...] = (
    ("convolution backward", "forward MACs for the input gradient, forward MACs again for the weight "
                             "gradient, 1 per output element for the bias gradient; each only when asked for"),
    ("matrix products (mm, bmm, addmm)", "the forward rule, once per product autograd runs"),
    ("ReLU backward", "2 per element (compare and multiply), as forward"),
    ("batch/layer/group norm backward", "1 per element for the bias gradient, 2 for the weight gradient "
                                        "(rebuild x_hat, multiply-add), 3 for the input gradient in training "
                                        "(centre, project, scale), 1 with running statistics"),
    ("max pooling backward", "1 per output gradient element (added at its argmax)"),
    ("average pooling backward", "out_elements x k_h x k_w (each gradient spread over its window)"),
    ("adaptive average pooling backward", "1 per input element"),
    ("sigmoid, tanh backward", "2 per element"),
    ("softmax backward", "3 per element; log-softmax backward 2 per element"),
    ("dropout backward", "1 per element"),
    ("sum", "1 per input element"),
    ("div", "1 per output element"),
    ("embedding backward", "1 per output gradient element"),
    ("slice/select backward", "0 (a copy into zeros)"),
)

# memory conventions (``memory=``), in the order users see them
MEMORY: dict[str, str] = {
    "convnet-burden": "every layer output is a new buffer, never reused; ReLU in place; a channel-wise scale "
                      "fused with the residual sum that follows writes one buffer; a concatenation of one "
                      "tensor, views, flatten and dropout add nothing",
    "all-outputs": "every op output that allocates new storage, as PyTorch executes the code (statistics, "
                   "indices and masks included); views and in-place results add nothing; never reused",
}
