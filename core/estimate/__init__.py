"""Parameter and memory arithmetic from a model config alone: no weights, no torch.

Everything here is derived from a Hugging Face `config.json` (shipped ones live in
assets/model_configs/), so the Learn and Estimate pages can talk about a 70B model on a laptop.
Counts are exact for the supported families (llama/mistral, opt, bert, distilbert): the tests
check them against transformers models built on the meta device and against peft's own counts.
Classification counts the model the engine trains (core.build): an encoder gets our own head over
its pooled features and loses its [CLS] pooler; a causal LM keeps transformers' `score`.
Memory figures are estimates; each part documents what it assumes.

CLI:  python -m core.estimate --model llama-2-7b --method lora --r 8 --targets q_proj,v_proj

The package, bottom up: configs (shipped configs, dimensions, heads) -> shapes (linear layers,
targets) -> method_kinds (which arithmetic counts a method) -> counts (parameters) -> memory_bytes
(training memory) -> picture (the Learn page's LoRA picture) -> cli. This module re-exports the
public names, so callers keep writing estimate.report(...).
"""
from __future__ import annotations

from core.estimate.configs import (
    CONFIG_DIR, Dims, FAMILIES, INDEX_FILE, TASKS, dims, family, list_models, load_config, model_info)
from core.estimate.shapes import (
    LinearShape, all_linear_targets, default_targets, first_adapted_layer, linear_layers, parse_targets,
    targeted_layers)
from core.estimate.method_kinds import (
    ADAPTER_METHODS, METHODS, method_args)
from core.estimate.counts import (
    MethodCounts, adapter_params, linear_head_params, method_counts, param_breakdown, total_params, trainable_params)
from core.estimate.memory_bytes import (
    CPU_PROCESS_FLOOR_MB, CPU_WORKSPACE_SHARE, Compute, DEVICES, DTYPE_ALIASES, DTYPE_BYTES, LORA_DEFAULT_DROPOUT,
    NF4_BLOCK, NF4_NESTED_BLOCK, OPTIMIZER_STATE_BYTES, activation_bytes, compare_methods, compute_mode,
    layer_activation_bytes, memory_estimate, nf4_bytes, parse_dtype, report, workspace_bytes)
from core.estimate.picture import (
    lora_picture)
from core.estimate.cli import (
    main)

__all__ = ['CONFIG_DIR', 'Dims', 'FAMILIES', 'INDEX_FILE', 'TASKS', 'dims', 'family', 'list_models', 'load_config',
           'model_info', 'LinearShape', 'all_linear_targets', 'default_targets', 'first_adapted_layer',
           'linear_layers', 'parse_targets', 'targeted_layers', 'ADAPTER_METHODS', 'METHODS', 'method_args',
           'MethodCounts', 'adapter_params', 'linear_head_params', 'method_counts', 'param_breakdown',
           'total_params', 'trainable_params', 'CPU_PROCESS_FLOOR_MB', 'CPU_WORKSPACE_SHARE', 'Compute',
           'DEVICES', 'DTYPE_ALIASES', 'DTYPE_BYTES', 'LORA_DEFAULT_DROPOUT', 'NF4_BLOCK', 'NF4_NESTED_BLOCK',
           'OPTIMIZER_STATE_BYTES', 'activation_bytes', 'compare_methods', 'compute_mode',
           'layer_activation_bytes', 'memory_estimate', 'nf4_bytes', 'parse_dtype', 'report',
           'workspace_bytes', 'lora_picture', 'main']
