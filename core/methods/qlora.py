"""QLoRA (Dettmers et al. 2023): the frozen base in 4-bit NF4 with double quantisation, LoRA on top.

bitsandbytes >= 0.48 runs the 4-bit kernels on CPU too, so the method works everywhere; only the
adapters (and the new head) train.
"""
from dataclasses import dataclass

from core.schema import ConfigError, hp
from core.device import cuda_half_dtype
from core.methods import Method, register
from core.methods.lora import LoraParams, anatomy, check_model, lora_config
from core.methods.lora import estimate as lora_estimate
from core.methods.lora import export as lora_export


@dataclass
class QLoraParams(LoraParams):
    double_quant: bool = hp(True, help="Quantise the quantisation constants too (saves ~0.4 bit/weight)",
                            advanced=True)
    compute_dtype: str = hp("auto", help="dtype of the 4-bit matmuls (auto: bf16 on GPU, fp32 on CPU)",
                            choices=("auto", "float32", "bfloat16", "float16"), advanced=True)


def bitsandbytes_available() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except (ImportError, RuntimeError, OSError):  # missing, or a broken native library
        return False
    return True


def quantization_config(params, device: str, skip_modules: list[str]):
    """Our spec -> transformers.BitsAndBytesConfig (NF4)."""
    if not bitsandbytes_available():
        raise ConfigError("method qlora needs the bitsandbytes package, which is not installed; "
                          "pip install bitsandbytes, or choose lora")
    import torch
    from transformers import BitsAndBytesConfig
    compute = params.compute_dtype
    if compute == "auto":
        cuda = str(device).startswith("cuda")  # "cuda" or "cuda:N"
        compute = cuda_half_dtype() if cuda else "float32"
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=params.double_quant,
                              bnb_4bit_compute_dtype=getattr(torch, compute),
                              llm_int8_skip_modules=list(skip_modules) or None)


def keep_weights_unpacked(model) -> None:
    """Turn off bitsandbytes' CPU AVX512-bf16 inference packing on every 4-bit layer.

    On such CPUs Linear4bit repacks its weight *in place* the first time it runs in eval mode
    under no_grad (our evaluations). Every later forward, training ones too, then goes through
    `gemv_4bit`, which has no autograd: gradients silently stop flowing through the frozen base
    (and layers with a bias raise). The packing also assumes in_features % 64 == 0 and crashes
    on smaller layers. Plain 4-bit matmuls are correct in train and eval alike.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def own_unquantized_weights(model) -> None:
    """Give the weights that stay unquantised (embeddings, norms, head) memory of their own.

    transformers reads the checkpoint through a memory map and leaves the tensors it does not
    quantise as views of it; quantising reads every fp32 weight once, so the whole mapped file
    (SmolLM2: 513 MB) then stays resident for as long as one view lives, and RSS ends up above
    plain LoRA's. Copying the few unquantised tensors releases the map (measured in
    bench/memory_by_method.py: SmolLM2 after loading ~0.8-1.4 GB -> ~0.6 GB RSS).
    """
    import gc
    for p in model.parameters():
        if p.__class__.__name__ != "Params4bit" and p.device.type == "cpu":
            p.data = p.data.clone()
    for module in model.modules():
        for name, buf in list(module._buffers.items()):
            if buf is not None and buf.device.type == "cpu":
                module._buffers[name] = buf.clone()
    gc.collect()
    try:  # quantising freed ~0.2-0.4 GB of fp32 temporaries that glibc keeps; hand them back
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to do
        pass


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)


def return_freed_memory_promptly(threshold: int = 128 * 1024) -> bool:
    """Serve allocations of `threshold` bytes and more from mmap, so freeing them returns memory.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after which
    the 4-bit matmuls' dequantised weights and the activations come from the heap, and the heap
    keeps what they free: a SmolLM2 QLoRA run (batch 8 x 128 tokens) peaked at 4.1 GB, above plain
    LoRA's 3.1 GB; with a fixed threshold 2.8 GB (bench/memory_by_method.py). Setting the threshold
    stops glibc from adjusting it for the rest of the process. Returns False where there is no glibc.
    """
    try:
        import ctypes
        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl)
        return False


def apply(model, params, ctx):
    from peft import get_peft_model, prepare_model_for_kbit_training
    # No gradient checkpointing: it recomputes every block in the backward pass, and QLoRA's peak is
    # below LoRA's without it (bench/memory_by_method.py, with return_freed_memory_promptly).
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, lora_config(params, ctx))


def estimate(params):
    _, kwargs = lora_estimate(params)
    return "qlora", kwargs  # the 4-bit base has no DoRA arithmetic in the estimator


def export(params, ctx):
    return lora_export(params, ctx, prepare=(
        "# QLoRA: the 4-bit base gets peft's k-bit preparation before the adapters.\n"
        "model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)\n"))


METHOD = register(Method(
    name="qlora", label="QLoRA (4-bit base + LoRA)",
    summary="LoRA on a base stored in 4-bit NF4: about a quarter of the memory for the weights, "
            "at some cost in speed.",
    params_cls=QLoraParams, apply=apply, quantized_base=True, check_model=check_model, estimate=estimate,
    export=export, anatomy=anatomy, learning_rate_range=(1e-4, 5e-3)))
