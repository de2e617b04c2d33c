"""Training memory: weights, gradients, optimizer states, activations kept for backward, CPU workspace."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from core.config import ConfigError
from core.estimate.configs import Dims, as_config, check_positive, dims, head_kind
from core.estimate.counts import MethodCounts, lora_params, method_counts
from core.estimate.method_kinds import check_method
from core.estimate.shapes import LinearShape, first_adapted_layer, linear_layers, matches, parse_targets, targeted_layers
from core.methods.targets import ia3_feedforward, ia3_targets


DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}

OPTIMIZER_STATE_BYTES = {"adamw": 8, "adamw_8bit": 2, "sgd": 0}  # per trainable param

NF4_BLOCK = 64          # bitsandbytes 4-bit block size: one absmax constant per 64 weights

NF4_NESTED_BLOCK = 256  # double quantisation: the absmax constants are themselves 8-bit, blocks of 256


def parse_dtype(dtype: str) -> str:
    name = DTYPE_ALIASES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    if name not in DTYPE_BYTES:
        raise ConfigError(f"dtype={dtype!r} is not allowed; choose one of {list(DTYPE_BYTES)}")
    return name


def _check_optimizer(optimizer: str) -> str:
    if optimizer not in OPTIMIZER_STATE_BYTES:
        raise ConfigError(f"optimizer={optimizer!r} is not allowed; choose one of {list(OPTIMIZER_STATE_BYTES)}")
    return optimizer


def nf4_bytes(n: int, double_quant: bool = True) -> int:
    """Bytes of one n-element weight tensor stored as bitsandbytes NF4.

    Two 4-bit codes per byte, plus one absmax per 64-weight block. With double quantisation
    (the QLoRA default) the absmax values are 8-bit, with an fp32 scale per 256 blocks and one
    fp32 offset: ~0.127 extra bits per weight instead of 0.5 (Dettmers et al. 2023, sec. 3).
    The 256-entry code tables are shared-size constants and left out.
    """
    blocks = math.ceil(n / NF4_BLOCK)
    if double_quant:
        constants = blocks + 4 * math.ceil(blocks / NF4_NESTED_BLOCK) + 4
    else:
        constants = 4 * blocks
    return math.ceil(n / 2) + constants


def _weights_bytes(cfg: dict[str, Any], method: str, counts: MethodCounts, e: int, task: str | None,
                   double_quant: bool) -> int:
    # Adapters, prompts and new heads are kept in fp32 (peft's autocast_adapter_dtype upcasts
    # them even on a half-precision base), so they cost 4 bytes whatever `dtype` is.
    added = 4 * counts.added
    if method != "qlora":
        return e * counts.base + added
    # QLoRA: every linear but the output layer is NF4; embeddings, norms, biases and the head
    # stay in the compute dtype (transformers keeps lm_head/score unquantised).
    quantised = [s.weight_params for s in linear_layers(cfg, task)]
    return sum(nf4_bytes(n, double_quant) for n in quantised) + e * (counts.base - sum(quantised)) + added


@dataclass(frozen=True)
class Compute:
    """How a training step stores what it keeps for backward.

    e:        bytes of a weight and of the residual stream (the weights' dtype)
    act:      bytes of a matmul output: 2 under autocast (16-bit matmuls over fp32 weights), else e
    autocast: every linear casts its input and its weight to 16 bits and keeps those copies
    cpu:      dropout masks are tensors of the input's dtype (ATen's _dropout_impl multiplies by
              one; CUDA's native_dropout keeps a bool), and SDPA has no fused kernel with dropout:
              it falls back to its math path, in fp32
    """
    e: int
    act: int
    autocast: bool
    cpu: bool

    def mask(self, tensor_bytes: int) -> int:
        """Bytes per element of a dropout mask on a tensor of tensor_bytes per element."""
        return tensor_bytes if self.cpu else 1


def compute_mode(dtype: str = "float32", autocast: bool = False, device: str = "cuda") -> Compute:
    """The Compute of a run: weights in `dtype`, optionally 16-bit autocast, on "cuda" or "cpu"."""
    e = DTYPE_BYTES[parse_dtype(dtype)]
    if device not in DEVICES:
        raise ConfigError(f"device={device!r} is not allowed; choose one of {list(DEVICES)}")
    if not isinstance(autocast, bool):
        raise ConfigError(f"autocast={autocast!r} must be true or false")
    half = autocast and e == 4  # autocast over half-precision weights changes nothing
    return Compute(e=e, act=2 if half else e, autocast=half, cpu=device == "cpu")


# Which linears of a block read the same tensor, and whether that tensor comes from the residual
# stream (a norm's output, in the weights' dtype: autocast casts it once per linear) or from a
# matmul (already in the compute dtype: the cast is a no-op and the tensor is shared).
# (group, source, how many linears read it); llama's gate and up both read the norm's output.
_PLAIN_INPUT_GROUPS = [("qkv", "residual", 3), ("out", "attention", 1), ("up", "residual", 1), ("down", "mlp", 1)]

_INPUT_GROUPS = {"llama": [("qkv", "residual", 3), ("out", "attention", 1), ("up", "residual", 2),
                           ("down", "mlp", 1)]}


def _attention_kernel(d: Dims, c: Compute, flash: bool) -> str:
    """'fused' (SDPA's flash kernels), 'math' (SDPA's fp32 fallback) or 'eager' (transformers' own)."""
    if not flash:
        return "eager"
    return "math" if c.cpu and d.attn_dropout > 0 else "fused"


def layer_activation_bytes(d: Dims, b: int, s_q: int, s_k: int, c: Compute, flash: bool,
                            trains: bool = True) -> int:
    """Bytes one transformer block keeps for backward (no recomputation).

    Korthikanti et al., "Reducing Activation Recomputation in Large Transformer Models"
    (arXiv:2205.05198, sec. 4.1) count s*b*h*(34 + 5*a*s/h) per layer for full fine-tuning with
    16-bit activations, 1-byte dropout masks, eager attention and a 4h MLP; this reduces to that.
    Written out term by term because adapter methods differ (the block is frozen: `trains`
    False), and PyTorch keeps only what a gradient it must compute needs:
      - a linear keeps its input only when its weight trains; a frozen one keeps nothing (fp32)
        or its 16-bit weight copy (autocast, counted in _autocast_weight_bytes);
      - under autocast each linear keeps its own 16-bit cast of a residual-stream input (q, k and
        v: three copies);
      - RMSNorm upcasts to fp32 and keeps that (4h), plus the normalised copy when its weight
        trains; LayerNorm keeps its input;
      - attention: SDPA's fused kernels keep q, k, v, the output and an fp32 log-sum-exp per row;
        the eager path and SDPA's math fallback keep the (dropped-out) probabilities too;
      - the MLP keeps the activation's input (SwiGLU: also up and act(gate) for their product).
    Measured against the tensors autograd saves (tests/test_estimate_saved.py).
    """
    tok, h, f, a = b * s_q, d.hidden, d.intermediate, d.heads
    qw, kvw, e, act = d.q_width, d.kv_width, c.e, c.act
    kernel = _attention_kernel(d, c, flash)
    widths = {"qkv": h, "out": qw, "up": h, "down": f}
    inputs = 0
    if trains:
        for group, source, readers in _INPUT_GROUPS.get(d.family, _PLAIN_INPUT_GROUPS):
            if source == "residual":
                inputs += (2 * readers if c.autocast else e) * widths[group]
            elif not (group == "out" and kernel == "fused"):  # the fused kernel kept its output already
                inputs += act * widths[group]
    if kernel == "fused":
        attn = act * (2 * qw + 2 * kvw) + 4 * a
    else:
        width = 4 if kernel == "math" else act  # the math fallback computes in fp32
        probs = a * s_k  # per query token: one row of probabilities per head
        attn = width * 3 * qw + width * probs
        if d.attn_dropout > 0:
            attn += c.mask(width) * probs + width * probs
    if d.family == "llama":
        norms = 2 * (4 * h + (e * h if trains else 0))
    else:
        norms = 2 * e * h
    mlp = (3 if d.gated_mlp else 1) * act * f
    drop = 2 * c.mask(act) * h if d.hidden_dropout > 0 else 0
    return tok * (inputs + attn + norms + mlp + drop)


def _autocast_weight_bytes(shapes: Iterable[LinearShape]) -> int:
    # Under autocast a linear on the gradient's path keeps the 16-bit copy of its weight that it
    # multiplied by: backward needs it for the input's gradient, frozen or not.
    return sum(2 * s.weight_params for s in shapes)


def _outside_activation_bytes(d: Dims, head: str, b: int, s_q: int, c: Compute, trains: bool,
                              embeddings: bool = True) -> int:
    """The embeddings (when the gradient reaches them), the final norm and the head."""
    tok, h, e = b * s_q, d.hidden, c.e
    embed = 0
    if embeddings and d.family in ("bert", "distilbert"):
        embed += e * tok * h  # the embeddings' LayerNorm input
    if embeddings and d.hidden_dropout > 0:
        embed += c.mask(e) * tok * h
    final = 0
    if d.family == "llama":
        final = tok * (4 * h + (e * h if trains else 0))
    elif d.family == "opt":
        final = e * tok * h
    if head == "lm":
        # the output layer's input (when it trains) and the fp32 logits the loss keeps
        kept_input = (2 if c.autocast else e) * tok * h if trains else 0
        return embed + final + kept_input + 4 * tok * d.vocab
    if head == "seq_cls":
        # decoders score every token and pick the last (transformers' *ForSequenceClassification);
        # encoders pool first. The new head always trains, so its input is kept.
        scored = tok if d.family in ("llama", "opt") else b
        return embed + final + (2 if c.autocast else e) * scored * h
    return embed + final


# What a CPU training process holds besides the tensors counted here: Python, torch, transformers,
# peft, the Trainer, the code pages the kernels touch, the tokenizer and the data. bench/memory_by_method.py
# measures it as the same job run on a 16-wide, one-layer twin of the model: 594-626 MB for MiniLM
# and SmolLM2 with the pinned versions (BENCHMARKS.md, 2026-12-02 evening).
CPU_PROCESS_FLOOR_MB = 600


# On a CPU, glibc keeps much of what a step frees (the forward's temporaries, interleaved with the
# tensors kept for backward) instead of returning it: peak RSS above weights, optimizer states and
# saved tensors was 0.19-0.39 of the saved tensors (MiniLM and SmolLM2, six methods, bf16 autocast;
# BENCHMARKS.md, 2026-12-02 stop 12). Zero with glibc told to return freed blocks at once.
CPU_WORKSPACE_SHARE = 1 / 3

LORA_DEFAULT_DROPOUT = 0.05  # core.methods.lora's default (a test keeps the two equal; this module stays light)

DEVICES = ("cuda", "cpu")

_ATTENTION_INPUTS = {"q_proj", "k_proj", "v_proj", "query", "key", "value", "q_lin", "k_lin", "v_lin"}


def _adapter_activation_bytes(cfg: dict[str, Any], method: str, shapes: list[LinearShape], b: int, s: int,
                              c: Compute, r: int, lora_dropout: float = 0.0, first: int = 0) -> int:
    tok = b * s
    if method in ("lora", "qlora", "dora"):
        per = []
        for sh in shapes:
            k = sh.in_features
            # peft casts the input to the fp32 adapter dtype; lora_A keeps what it multiplied:
            # its own 16-bit cast under autocast, else the fp32 (dropped-out) input
            kept = 2 * k if c.autocast else 4 * k
            # the dropout mask is kept only to pass the gradient on to the input: the lowest adapted
            # block's q, k and v read a frozen input, which needs none
            if lora_dropout > 0 and not (sh.layer == first and sh.name in _ATTENTION_INPUTS):
                kept += c.mask(4) * k
            kept += (2 if c.autocast else 4) * r  # lora_B's input
            if method == "dora":
                kept += c.e * sh.out_features  # base output, rescaled
            per.append(tok * kept)
        return sum(per)
    if method == "ia3":
        feedforward = ia3_feedforward(cfg["model_type"])
        # an input scaling keeps the fp32 input it scaled; an output scaling, the linear's output
        return sum(tok * (4 * sh.in_features if any(matches(sh, f) for f in feedforward)
                          else c.act * sh.out_features) for sh in shapes)
    return 0


def _linear_head_bytes(d: Dims, b: int, head_hidden: int) -> int:
    return 4 * b * d.embed_dim + (8 * b * head_hidden if head_hidden else 0)


def activation_bytes(cfg: dict[str, Any] | str, method: str, batch_size: int = 8, seq_len: int = 256,
                     r: int = 8, targets: str | Sequence[str] | None = None, dtype: str = "float32",
                     num_virtual_tokens: int = 20, head_hidden: int = 0, task: str | None = None,
                     flash_attention: bool = False, lora_dropout: float = 0.0, autocast: bool = False,
                     device: str = "cuda", top_layers: int = 0, gradient_checkpointing: bool = False) -> int:
    """Activation bytes kept for the backward pass of one training step.

    Methods with adapters or prompts inside the model (lora, dora, qlora, ia3, prompt/prefix
    tuning) must backpropagate through the frozen base to reach them: they keep what the frozen
    blocks need to pass the gradient on (not the inputs of frozen linears), plus what the adapters
    store. linear_head runs the frozen base without gradients: only the pooled features are kept.
    zero_shot does not train: 0. flash_attention: SDPA (transformers' default) rather than eager.
    top_layers (LoRA): adapters on the last blocks only; backpropagation stops at the lowest.
    gradient_checkpointing: each block on the gradient's path keeps only its input (the residual
    stream) and recomputes the rest in the backward pass, one block at a time: the block terms,
    the adapters' and the autocast weight copies then count for a single block (Korthikanti et al.
    sec. 4.2, full recomputation).
    """
    cfg = as_config(cfg)
    d = dims(cfg)
    check_method(method)
    b, s = check_positive("batch_size", batch_size), check_positive("seq_len", seq_len)
    c = compute_mode(dtype, autocast if method != "qlora" else False, device)
    if method == "zero_shot":
        return 0
    if method == "linear_head":
        return _linear_head_bytes(d, b, head_hidden)
    virtual = check_positive("num_virtual_tokens", num_virtual_tokens) if method in (
        "prompt_tuning", "prefix_tuning") else 0
    s_q = s + virtual if method == "prompt_tuning" else s  # virtual tokens join the sequence
    s_k = s + virtual if method in ("prompt_tuning", "prefix_tuning") else s  # prefixes only lengthen keys
    trains = method == "full"
    head = head_kind(cfg, task)
    first = first_adapted_layer(cfg, top_layers) if method in ("lora", "qlora", "dora") else 0
    if not isinstance(gradient_checkpointing, bool):
        raise ConfigError(f"gradient_checkpointing={gradient_checkpointing!r} must be true or false")
    blocks = d.layers - first
    one_block = layer_activation_bytes(d, b, s_q, s_k, c, flash_attention, trains)
    # share: how much of what the blocks keep is alive at the peak (all of it, or one block's)
    share = 1.0 / blocks if gradient_checkpointing else 1.0
    if gradient_checkpointing:
        total = blocks * c.e * b * s_q * d.hidden + one_block
    else:
        total = blocks * one_block
    total += _outside_activation_bytes(d, head, b, s_q, c, trains, embeddings=first == 0)
    shapes: list[LinearShape] = []
    if method in ("lora", "qlora", "dora", "ia3"):
        check_positive("r", r)
        chosen = ia3_targets(d.model_type) if method == "ia3" and targets is None else targets
        shapes = targeted_layers(cfg, chosen, task, top_layers if first else 0)
        total += int(share * _adapter_activation_bytes(cfg, method, shapes, b, s_q, c, r, lora_dropout, first))
    if c.autocast:
        in_blocks = [sh for sh in linear_layers(cfg, task) if sh.layer is not None and sh.layer >= first]
        total += int(share * _autocast_weight_bytes(in_blocks))
        if head == "lm":
            total += 2 * d.vocab * d.embed_dim
        if method in ("lora", "dora"):
            total += 2 * lora_params(shapes, r, False)
    return total


def workspace_bytes(cfg: dict[str, Any] | str, method: str, activations: int, batch_size: int = 8,
                    seq_len: int = 256, dtype: str = "float32", autocast: bool = False, device: str = "cuda",
                    flash_attention: bool = False) -> int:
    """Memory a CPU process holds beyond the tensors: what glibc keeps of a step's freed temporaries.

    Backpropagating methods: CPU_WORKSPACE_SHARE of the activations (not qlora: see below).
    linear_head: its frozen forward holds one block's intermediates at a time. 0 on CUDA (its caching allocator's
    fragmentation, 10-20 %, is left to the caller, as the Learn page says).
    """
    cfg = as_config(cfg)
    c = compute_mode(dtype, autocast, device)
    # qlora: the engine has glibc return freed memory at once under a 4-bit base
    # (core.methods.qlora.return_freed_memory_promptly), so nothing is hoarded
    if not c.cpu or method in ("zero_shot", "qlora"):
        return 0
    if method == "linear_head":
        d = dims(cfg)
        return layer_activation_bytes(d, batch_size, seq_len, seq_len, c, flash_attention, True)
    return int(CPU_WORKSPACE_SHARE * activations)


def memory_estimate(cfg: dict[str, Any] | str, method: str, batch_size: int = 8, seq_len: int = 256, r: int = 8,
                    targets: str | Sequence[str] | None = None, dtype: str = "float32", num_labels: int = 2,
                    num_virtual_tokens: int = 20, head_hidden: int = 0, task: str | None = None,
                    optimizer: str = "adamw", double_quant: bool = True,
                    flash_attention: bool = False, lora_dropout: float = 0.0, autocast: bool = False,
                    device: str = "cuda", top_layers: int = 0, gradient_checkpointing: bool = False
                    ) -> dict[str, int]:
    """Training memory in bytes: {weights, gradients, optimizer, activations, workspace, total}.

    weights:     base model in `dtype` (qlora: NF4 linears + constants, the rest in `dtype`
                 as the compute dtype); adapters, prompts and new heads in fp32.
    gradients:   trainable parameters only (full: in `dtype`; added parameters: fp32).
    optimizer:   AdamW keeps two fp32 states (m, v) per trainable parameter: 8 bytes
                 ('adamw_8bit': 2, 'sgd' without momentum: 0). Mixed-precision master copies of
                 the weights are not counted.
    activations: see activation_bytes. autocast: 16-bit matmuls over fp32 weights (the engine's
                 bf16 mixed precision; never under QLoRA's 4-bit base, as in the engine).
    workspace:   see workspace_bytes (device="cpu" only).
    Not counted: CUDA context, the CUDA allocator's fragmentation, the CPU process itself
    (CPU_PROCESS_FLOOR_MB).
    """
    cfg = as_config(cfg)
    e = DTYPE_BYTES[parse_dtype(dtype)]
    state_bytes = OPTIMIZER_STATE_BYTES[_check_optimizer(optimizer)]
    counts = method_counts(cfg, method, r, targets, num_labels, num_virtual_tokens, head_hidden, task,
                           top_layers if method in ("lora", "qlora", "dora") else 0)
    weights = _weights_bytes(cfg, method, counts, e, task, double_quant)
    gradients = counts.trainable * (e if method == "full" else 4)
    optimizer_bytes = counts.trainable * state_bytes
    activations = activation_bytes(cfg, method, batch_size, seq_len, r, targets, dtype, num_virtual_tokens,
                                   head_hidden, task, flash_attention, lora_dropout, autocast, device, top_layers,
                                   gradient_checkpointing)
    workspace = workspace_bytes(cfg, method, activations, batch_size, seq_len, dtype,
                                autocast if method != "qlora" else False, device, flash_attention)
    parts = {"weights": weights, "gradients": gradients, "optimizer": optimizer_bytes, "activations": activations,
             "workspace": workspace}
    return {**parts, "total": sum(parts.values())}


def compare_methods(cfg: dict[str, Any] | str, methods: Sequence[str] = ("full", "lora", "qlora"),
                    **kwargs: Any) -> dict[str, dict[str, int]]:
    """memory_estimate for each method with the same settings, e.g. full vs lora vs qlora."""
    cfg = as_config(cfg)
    return {method: memory_estimate(cfg, method, **kwargs) for method in methods}


def report(cfg: dict[str, Any] | str, method: str, r: int = 8, targets: str | Sequence[str] | None = None,
           batch_size: int = 8, seq_len: int = 256, dtype: str = "float32", num_labels: int = 2,
           num_virtual_tokens: int = 20, head_hidden: int = 0, task: str | None = None,
           optimizer: str = "adamw", lora_dropout: float = 0.0, autocast: bool = False, device: str = "cuda",
           flash_attention: bool = False, top_layers: int = 0, gradient_checkpointing: bool = False
           ) -> dict[str, Any]:
    """Trainable/total parameters (peft's convention: total includes the added ones) and memory."""
    cfg = as_config(cfg)
    top = top_layers if method in ("lora", "dora", "qlora") else 0
    counts = method_counts(cfg, method, r, targets, num_labels, num_virtual_tokens, head_hidden, task, top)
    uses_targets = method in ("lora", "dora", "qlora", "ia3")
    chosen = ia3_targets(cfg["model_type"]) if method == "ia3" and targets is None else targets
    return {
        "model_type": cfg.get("model_type"),
        "method": method,
        "r": r if method in ("lora", "dora", "qlora") else None,
        "targets": parse_targets(cfg, chosen, task) if uses_targets else None,
        "trainable": counts.trainable,
        "total": counts.total,
        "percent": round(100.0 * counts.trainable / counts.total, 6) if counts.total else 0.0,
        "memory": memory_estimate(cfg, method, batch_size, seq_len, r, targets, dtype, num_labels,
                                  num_virtual_tokens, head_hidden, task, optimizer,
                                  flash_attention=flash_attention, lora_dropout=lora_dropout,
                                  autocast=autocast, device=device, top_layers=top,
                                  gradient_checkpointing=gradient_checkpointing),
    }
