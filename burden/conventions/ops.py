"""Groups of aten ops that several conventions treat alike."""

from __future__ import annotations

import torch

aten = torch.ops.aten

# results share the input's storage: no new memory, no work
ALIAS_OPS = (
    aten.view, aten._unsafe_view, aten.reshape, aten.alias, aten.detach, aten.t, aten.transpose,
    aten.permute, aten.expand, aten.squeeze, aten.unsqueeze, aten.flatten, aten.slice, aten.select,
    aten.as_strided, aten.unbind, aten.split, aten.split_with_sizes, aten.chunk, aten.narrow,
    aten.unfold, aten.view_as, aten.expand_as, aten.lift_fresh, aten._reshape_alias, aten.unsafe_split,
    aten.unsafe_chunk, aten.unsafe_split_with_sizes,
)
# copies and lookups: data moves, no arithmetic
COPY_OPS = (aten.clone, aten.copy_, aten._to_copy, aten.contiguous, aten._local_scalar_dense,
            aten.lift_fresh_copy, aten.embedding, aten.index_select, aten.gather, aten.index)
DROPOUT_OPS = (aten.dropout, aten.native_dropout, aten.feature_dropout, aten.alpha_dropout)
FACTORY_OPS = (
    aten.empty, aten.empty_strided, aten.empty_like, aten.zeros, aten.zeros_like, aten.ones,
    aten.ones_like, aten.full, aten.full_like, aten.arange, aten.scalar_tensor, aten.new_empty,
    aten.new_empty_strided, aten.new_zeros, aten.new_ones, aten.new_full, aten.fill_, aten.zero_,
)
NORM_OPS = (
    aten.native_batch_norm, aten._native_batch_norm_legit, aten._native_batch_norm_legit_no_training,
    aten.cudnn_batch_norm, aten.miopen_batch_norm, aten._batch_norm_with_update,
    aten._batch_norm_no_update,
)
SOFTMAX_OPS = (aten._softmax, aten.softmax, aten._safe_softmax)

# ops whose outputs after the first are saved for backward (statistics, pooling indices, masks),
# not features of the forward pass
AUX_OUTPUT_OPS = {
    *NORM_OPS, aten.native_layer_norm, aten.native_group_norm, aten.native_dropout,
    aten.max_pool1d_with_indices, aten.max_pool2d_with_indices, aten.max_pool3d_with_indices,
    aten.adaptive_max_pool2d, aten.adaptive_max_pool3d,
}
