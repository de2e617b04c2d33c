"""Learn: what fine-tuning and PEFT are, the LoRA picture with real shapes, and a calculator.

Everything here is arithmetic on a model's config.json (core.estimate): no weights are loaded, so
a 70B model is as quick to explore as MiniLM.
"""
from __future__ import annotations

import streamlit as st

from core import estimate
from core.textsafe import md_text
from pages import present
from pages.shared.formatting import fmt_bytes, fmt_params, show_error
from pages.shared.learn_figures import lora_figure, memory_figure
from pages.shared.learn_links import TARGET_MODES, lessons_section, load_url, write_url
from pages.shared.legacy import leave_legacy_multipage_mode
from pages.shared.method_names import learn_method_labels, trains_instead
from pages.shared.train_state import seed, seed_index

DEFAULT_MODEL = "llama-2-7b"


# ------------------------------------------------------------------------------------ helpers

def _held(key: str, default=None, options: list | None = None):
    """The value a widget's key holds (seeded with `default` if it holds none, or none of `options`),
    to pass as the widget's own default too: a browser that re-creates the widget after the run that
    seeded the key was interrupted shows and sends back that default (streamlit#4247), which would
    otherwise be the slider's minimum or the first option."""
    return seed(key, st.session_state.get(key, default), options)


def _index(key: str, options: list) -> int:
    """_held() for a selectbox or radio: the index of the option its key holds."""
    return seed_index(key, st.session_state.get(key), options)


@st.cache_data(show_spinner=False)
def _config(key: str) -> dict:
    return estimate.load_config(key)


def _task(cfg: dict) -> str:
    # Decoders are tuned to follow instructions; encoders get a classification head.
    return "sft" if estimate.dims(cfg).family in ("llama", "opt") else "classification"


def _block_modules(cfg: dict, task: str, layer: int) -> list[str]:
    """Names lora_picture accepts for the linears of one block (bert's three 'dense' by their path)."""
    out = []
    for shape in estimate.linear_layers(cfg, task):
        if shape.layer != layer:
            continue
        inside = shape.path.split(f".{layer}.", 1)[1]
        out.append(inside if shape.name == "dense" else shape.name)
    return out


@st.cache_data(show_spinner=False)
def qlora_claim() -> str:
    """QLoRA's headline, with the settings that make it true by this page's own calculator (the
    paper's '65B on one 48 GB GPU' relies on gradient checkpointing too)."""
    try:
        cfg = _config("llama-2-70b")
        need = estimate.memory_estimate(cfg, "qlora", batch_size=1, seq_len=256, dtype="bfloat16", task="sft",
                                        flash_attention=True)["total"]
        with_gc = estimate.memory_estimate(cfg, "qlora", batch_size=4, seq_len=512, dtype="bfloat16", task="sft",
                                           flash_attention=True, gradient_checkpointing=True)["total"]
    except Exception:  # a missing config: the plain statement, without a number
        return "That is what brings a 70B model within reach of one large GPU, at a small batch."
    return (f"By the calculator below, Llama-2 70B with QLoRA at batch 1 and 256 tokens needs about "
            f"{fmt_bytes(need)}: one 48 GB GPU. Larger batches or longer texts need more (their activations "
            f"grow with both) unless activations are recomputed: with **gradient checkpointing** ticked, "
            f"batch 4 at 512 tokens needs about {fmt_bytes(with_gc)}, as the QLoRA paper did it.")


# ------------------------------------------------------------------------------------ the page

leave_legacy_multipage_mode()
st.title("Fine-tuning, and doing it cheaply")
lessons_section()
url_values = load_url()

st.markdown("""
**Fine-tuning** takes a model that was pre-trained on a mountain of text and trains it a little more on
*your* examples, so it learns your labels, your style or your facts. **Full fine-tuning** updates every
weight: for a 7-billion-parameter model that means gradients and optimizer states for all 7 billion
numbers, several times the memory of the model itself.

**Parameter-efficient fine-tuning (PEFT)** freezes the pre-trained weights and trains a small number of
new ones beside them: an *adapter*. The frozen model needs no gradients and no optimizer states, and
what you save and share afterwards is a few megabytes instead of a whole model.

- **LoRA** (Hu et al., 2021) adds to a weight matrix **W** (d×k) a low-rank update **B·A**, with
  **A** r×k and **B** d×r and r tiny (4–64). Only A and B train; **W′ = W + (α/r)·B·A**. Because B
  starts at zero, training starts exactly from the original model.
- **QLoRA** (Dettmers et al., 2023) stores the frozen W in 4 bits (NF4) and trains LoRA adapters on top:
  the weights shrink about 4× compared with 16-bit. QLORA_CLAIM
- **Prompt tuning** and **prefix tuning** leave every weight alone and learn a few "virtual tokens" that
  are put in front of the input (or of every layer's keys and values).
- **IA³** learns one scaling vector per adapted layer: even fewer numbers than LoRA.

**Being honest about the cost:** PEFT cuts the *trainable* parameters by 100–1000×, but not the
memory by as much. The frozen model still has to sit in memory, and the activations of a forward and
backward pass through all of it are still kept. On small datasets LoRA usually lands close to full
fine-tuning; it is not free accuracy, and a rank that is too low can underfit.
""".replace("QLORA_CLAIM", qlora_claim()))

st.header("The LoRA picture, with real shapes")
st.caption("Pick a model and a layer: the rectangles are drawn to scale from its config.")

models = estimate.list_models()
keys = list(models)
if st.session_state.get("learn_model") not in keys:
    st.session_state["learn_model"] = DEFAULT_MODEL if DEFAULT_MODEL in keys else keys[0]

method_labels = learn_method_labels()
top_left, top_right = st.columns(2)
with top_left:
    model_key = st.selectbox("Model", keys, index=_index("learn_model", keys),
                             format_func=lambda k: models.get(k, k), key="learn_model")
with top_right:
    method_keys = list(method_labels)
    method = st.selectbox("Method", method_keys, index=_index("learn_method", method_keys),
                          format_func=method_labels.get, key="learn_method")

try:
    cfg = _config(model_key)
    dims = estimate.dims(cfg)
    task = _task(cfg)
except ValueError as exc:
    show_error(exc)
    st.info("Choose another model from the list.")
    st.stop()

c1, c2 = st.columns(2)
with c1:
    r = st.slider("LoRA rank r", 1, 128, value=_held("learn_r", 8), key="learn_r",
                  help="How many directions each adapted matrix may change in. A and B grow linearly with r.")
with c2:
    alpha = st.slider("LoRA alpha (α)", 1, 256, value=_held("learn_alpha", 16), key="learn_alpha",
                      help="Scales the update: ΔW = (α/r)·B·A. A common rule of thumb is α = 2r.")

modules = _block_modules(cfg, task, 0)
defaults = estimate.default_targets(cfg)
p1, p2 = st.columns(2)
if st.session_state.get("learn_layer", 0) > dims.layers - 1:
    if "layer" in url_values:
        st.warning(f"This link could not be used in full: layer={md_text(url_values['layer'], 40)} does not exist in "
                   f"{model_key} (layers 0–{dims.layers - 1}).")
    st.session_state["learn_layer"] = 0  # the previous model had more layers
with p1:
    layer = (st.slider("Layer (block)", 0, dims.layers - 1, value=_held("learn_layer", 0), key="learn_layer")
             if dims.layers > 1 else 0)
with p2:
    default_module = next((m for m in modules if m.endswith(defaults[0])), modules[0])
    if st.session_state.get("learn_module") not in modules:
        if url_values.get("module"):
            st.warning(f"This link could not be used in full: module={md_text(repr(url_values['module']), 60)} is not a weight "
                       f"matrix of {model_key}; choose one of {modules}.")
        st.session_state["learn_module"] = next((m for m in modules if m.endswith(defaults[0])), modules[0])
    module = st.selectbox("Weight matrix", modules, index=_index("learn_module", modules),
                          key="learn_module")

try:
    pic = estimate.lora_picture(cfg, layer=layer, module=module, r=r, alpha=alpha)
except ValueError as exc:
    show_error(exc)
else:
    fig, exaggerated = lora_figure(pic)
    st.plotly_chart(present.figure(fig), width="stretch", config={"displayModeBar": False}, key="learn_picture")
    m1, m2, m3 = st.columns(3)
    m1.metric("Weights in W (frozen)", f"{pic['params_W']:,}")
    m2.metric("Weights in A and B (trained)", f"{pic['params_AB']:,}")
    m3.metric("A+B as a share of W", f"{100 * pic['ratio']:.3g} %")
    note = (f"`{pic['path']}` in layer {layer}: W is {pic['d']:,}×{pic['k']:,}. B·A has rank at most "
            f"r = {r}, while W could have rank up to {pic['max_rank']:,}.")
    if exaggerated:
        note += " A and B are drawn thicker than to scale; at true scale they would be hairlines."
    st.caption(note)
    chosen_method = st.session_state.get("learn_method", "lora")
    instead = trains_instead(chosen_method)
    if instead:
        # The calculator below has another method picked: this picture must not pass for it.
        st.info(f"This picture is LoRA's. {method_labels.get(chosen_method, chosen_method)}, picked in the "
                f"calculator below, {instead} Its r and alpha sliders do not apply.")

st.header("Calculator: parameters and memory")

t1, t2, t3 = st.columns(3)
with t1:
    target_mode = st.radio("LoRA / IA³ targets", TARGET_MODES, key="learn_targets_mode",
                           index=_index("learn_targets_mode", list(TARGET_MODES)),
                           help="Which linear layers get an adapter. Default: the attention query and value "
                                "projections, as in the LoRA paper.")
    chosen = None
    if target_mode == TARGET_MODES[2]:
        options = estimate.all_linear_targets(cfg, task)
        current = st.session_state.get("learn_targets")
        if current is None or any(t not in options for t in current):
            if url_values.get("tg"):
                st.warning(f"This link could not be used in full: tg names modules {model_key} does not have; "
                           f"its linear modules are {options}.")
            st.session_state["learn_targets"] = [t for t in defaults if t in options]
        chosen = st.multiselect("Modules", options, default=_held("learn_targets"), key="learn_targets")
with t2:
    batches, lengths = [1, 2, 4, 8, 16, 32, 64, 128], [64, 128, 256, 512, 1024, 2048, 4096]
    batch = st.select_slider("Batch size", batches, value=_held("learn_batch", 4, batches), key="learn_batch")
    seq_len = st.select_slider("Sequence length (tokens)", lengths, value=_held("learn_seq", 512, lengths),
                               key="learn_seq")
with t3:
    dtypes = ["bfloat16", "float32"]
    dtype = st.selectbox("Weights dtype", dtypes, index=_index("learn_dtype", dtypes),
                         key="learn_dtype",
                         help="bfloat16: how large models are trained on GPUs. QLoRA stores W in 4 bits and "
                              "computes in this dtype.")
    checkpointing = st.checkbox("Gradient checkpointing", value=_held("learn_gc", False), key="learn_gc",
                                help="Keep only each block's input and recompute the rest in the backward "
                                     "pass: activations shrink to about one block's worth, for ~30 % more "
                                     "compute. How QLoRA's paper fit a 65B model on one 48 GB GPU.")
    virtual = 20
    if method in ("prompt_tuning", "prefix_tuning"):
        virtual = st.slider("Virtual tokens", 1, 100, value=_held("learn_vtokens", 20), key="learn_vtokens")

if target_mode == TARGET_MODES[0]:
    targets = None
elif target_mode == TARGET_MODES[1]:
    targets = "all-linear"
else:
    targets = chosen or None
    if not chosen:
        st.warning("No module chosen: using the default targets. Pick at least one module.")

try:
    counts = estimate.method_counts(cfg, method, r=r, targets=targets, num_virtual_tokens=virtual, task=task)
    compared = ["full", "lora", "qlora"] + ([method] if method not in ("full", "lora", "qlora") else [])
    memory = estimate.compare_methods(cfg, compared, batch_size=batch, seq_len=seq_len, r=r, targets=targets,
                                      dtype=dtype, num_virtual_tokens=virtual, task=task,
                                      lora_dropout=estimate.LORA_DEFAULT_DROPOUT,
                                      gradient_checkpointing=checkpointing)
except ValueError as exc:
    show_error(exc)
    st.info("Change the targets or the model and try again.")
    st.stop()

share = 100.0 * counts.trainable / counts.total if counts.total else 0.0
k1, k2, k3 = st.columns(3)
k1.metric("Trainable parameters", f"{counts.trainable:,}",
          help=f"{method_labels[method]} on {models.get(model_key, model_key)}")
k2.metric("Share of all parameters", f"{share:.3g} %", help=f"of {counts.total:,} parameters in total")
k3.metric(f"Training memory ({method_labels[method].split(' (')[0]})", fmt_bytes(memory[method]["total"]))
st.caption(f"Total parameters: {counts.total:,} ({fmt_params(counts.total)}), task: "
           f"{'instruction tuning (causal LM)' if task == 'sft' else 'classification (encoder + head)'}.")

st.plotly_chart(present.figure(memory_figure(memory)), width="stretch", key="learn_memory")
st.caption("Estimates from the config alone: weights, gradients and AdamW states (two fp32 numbers per "
           "trainable weight) are exact arithmetic; activations follow Korthikanti et al. (2022) "
           + ("with gradient checkpointing (one block's worth kept at a time). " if checkpointing
              else "without recomputation. ") + "Not counted: the CUDA context, fragmentation, kernel workspaces: add 10–20 %. "
           f"On a CPU the process itself also holds about {estimate.CPU_PROCESS_FLOOR_MB / 1000:.1f} GB "
           "(Python, torch and the libraries).")

st.info("""**What to notice**
- Moving **r** changes the trainable count a lot, but the memory bars hardly move: the frozen weights
  and the activations dominate, not the adapter.
- Full fine-tuning pays for gradients and optimizer states on *every* weight: the orange and red blocks.
- QLoRA's gain is in the grey block: 4-bit weights. That is what brings a 7B or 13B model onto one GPU.
- Batch size and sequence length scale the activations (blue) for every method alike.""")

write_url({"module": default_module, "layer": 0})
