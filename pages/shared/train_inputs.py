"""Train's model and data sections: the model picker, the dataset sources, columns and preview."""
from __future__ import annotations

import dataclasses
import json
import os

import streamlit as st

from core import data as core_data
from core import models, presets, uploads
from core.config import DataSpec, RunConfig
from pages import present
from pages.shared.formatting import error_text, md_escape, show_error
from pages.shared.session import gpu_probe_allowed, owner_id
from pages.shared.train_state import DRAFT_KEY, UPLOADS_KEY, apply_preset, seed, seed_index, ui_state

OTHER_MODEL = "Hub id or local folder…"
DATA_KINDS = {"builtin": "Built-in", "upload": "Upload a file", "hub": "Hub dataset", "local": "Local file path"}
TASK_LABELS = {"classification": "Classification", "sft": "Instruction tuning (SFT)"}


@st.cache_data(ttl=120, max_entries=64, show_spinner=False)
def _resolve(name: str) -> tuple[dict | None, str]:
    """(what the model is, error text): failures are cached too, so an offline hub id is probed once."""
    try:
        r = models.resolve(name)
    except Exception as exc:
        return None, error_text(exc)
    tasks = list(r.entry.tasks) if r.entry else (["classification", "sft"] if r.kind == "causal"
                                                  else ["classification"])
    return {"name": r.name, "label": r.label, "kind": r.kind, "origin": r.origin, "tasks": tasks,
            "embedded": r.is_embedded, "description": r.entry.description if r.entry else ""}, ""


@st.cache_data(ttl=600, max_entries=32, show_spinner=False)
def _preview(spec_json: str, stamp) -> dict:
    # stamp (file mtime) makes an edited local file read again.
    return core_data.preview(DataSpec(**json.loads(spec_json)))


def _file_stamp(source: str):
    if source.startswith(("builtin:", "hub:")):
        return None
    try:
        return os.path.getmtime(os.path.expanduser(source))
    except OSError:
        return None


# ------------------------------------------------------------------------------------- sections

@st.cache_data(ttl=60, show_spinner=False)
def _gpu_shelf_entries() -> list:
    """The GPU shelf models that fit this GPU's free memory, as picker entries ([] on a CPU)."""
    from core import gpu_shelf
    try:
        return [models.ModelEntry(e.hub_id, e.label, e.access_note or f"Licence: {e.licence}", e.kind,
                                  e.pooling, list(e.lora_targets), e.params_millions,
                                  e.config()["model_type"], e.hub_id, e.tasks, e.licence, embedded=False)
                for e in gpu_shelf.offered()]
    except Exception:  # a failed GPU probe: the usual picker
        return []


def model_section(draft: dict) -> dict | None:
    """Model picker; returns the resolved model (as a dict) or None after showing why not."""
    st.subheader("1 · Model")
    entries = models.list_models()
    shelf = _gpu_shelf_entries() if gpu_probe_allowed() else []
    entries += [e for e in shelf if e.key not in {x.key for x in entries}]
    keys = [e.key for e in entries] + [OTHER_MODEL]
    labels = {e.key: e.label for e in entries}
    current = draft["model"]["name"]
    index = seed_index("tr_model_pick", current if current in labels else OTHER_MODEL, keys)
    col_pick, col_other = st.columns([1, 1])
    pick = col_pick.selectbox("Base model", keys, index=index, key="tr_model_pick",
                              format_func=lambda k: labels.get(k, k))
    if pick == OTHER_MODEL:
        typed = seed("tr_model_custom", "" if current in labels else current)
        name = col_other.text_input("Hub id or local folder", typed, key="tr_model_custom",
                                    placeholder="e.g. distilbert-base-uncased or /path/to/model").strip()
    else:
        name = pick
    draft["model"]["name"] = name
    if not name:
        st.info("Enter a Hugging Face Hub id (owner/name) or the path of a saved model folder.")
        return None
    with st.spinner(f"Looking up {name}…"):
        resolved, err = _resolve(name)
    if err:
        st.error(err)
        return None
    where = {"embedded": "embedded (works offline)", "local": "local folder", "hub": "Hugging Face Hub"}
    st.caption(f"{resolved['kind']} model · {where.get(resolved['origin'], resolved['origin'])}"
               + (f" · {resolved['description']}" if resolved["description"] else ""))
    return resolved


def _builtin_source(draft: dict) -> str:
    builtins = core_data.list_builtin()
    current = draft["data"]["source"]
    index = seed_index("tr_data_builtin", current.removeprefix("builtin:") if current.startswith("builtin:")
                       else ui_state().get("builtin", ""), list(builtins))
    name = st.selectbox("Built-in dataset", list(builtins), index=index, key="tr_data_builtin",
                        format_func=lambda n: f"{n} — {builtins[n]}")
    ui_state()["builtin"] = name
    return f"builtin:{name}"


def _upload_source(draft: dict) -> str:
    uploaded = st.file_uploader("CSV, TSV, JSON, JSON Lines or Parquet", type=list(core_data.FORMATS),
                                key="tr_data_upload")
    saved = st.session_state.setdefault(UPLOADS_KEY, {})
    if uploaded is not None:
        if uploaded.file_id not in saved:
            try:
                # The user's filename only picks the format; the server names the stored file.
                # Within this visitor's quota; a file that cannot be read is deleted at once.
                path = uploads.save_for(owner_id(), uploaded.getvalue(), uploaded.name)
            except Exception as exc:
                show_error(exc)
                return ""
            saved[uploaded.file_id] = (path, uploaded.name)
        path, shown = saved[uploaded.file_id]
        ui_state()["upload"] = (path, shown)
        return path
    previous = ui_state().get("upload")
    if previous and os.path.exists(previous[0]):  # the uploader forgets its file on a page switch
        st.caption(f"Using the file uploaded earlier: {md_escape(previous[1])}")
        return previous[0]
    return ""


def _hub_source(draft: dict) -> str:
    current = draft["data"]["source"]
    hub_ref = seed("tr_data_hub", current.removeprefix("hub:") if current.startswith("hub:") else "")
    split = seed("tr_data_split", draft["data"].get("hub_split") or "train")
    c1, c2 = st.columns([3, 1])
    ref = c1.text_input("Hub dataset id", hub_ref, key="tr_data_hub", placeholder="e.g. stanfordnlp/imdb").strip()
    draft["data"]["hub_split"] = c2.text_input("Split", split, key="tr_data_split").strip() or "train"
    return f"hub:{ref}" if ref else ""


def _local_source(draft: dict) -> str:
    typed = seed("tr_data_local", ui_state().get("local_path", ""))
    path = st.text_input("Local file path (on the server)", typed, key="tr_data_local",
                         placeholder="/path/to/data.jsonl").strip()
    ui_state()["local_path"] = path
    return path


def _pick_task(draft: dict, source: str, resolved: dict | None) -> str:
    if source.startswith("builtin:"):
        task = _builtin_task_of(source) or draft["data"]["task"]  # unknown name: the preview says so
        st.caption(f"Task: **{TASK_LABELS[task]}** (set by the dataset)")
        return task
    allowed = list(TASK_LABELS)
    index = seed_index("tr_data_task", draft["data"]["task"], allowed)
    return st.radio("Task", allowed, index=index, key="tr_data_task", horizontal=True, format_func=TASK_LABELS.get)


def data_section(draft: dict, resolved: dict | None) -> dict | None:
    """Dataset, task, columns and preview; returns the preview dict (or None)."""
    st.subheader("2 · Data")
    kinds = ["builtin", "upload", "hub"] + (["local"] if core_data.local_files_allowed() else [])
    ui = ui_state()
    index = seed_index("tr_data_kind", ui.get("data_kind", "builtin"), kinds)
    kind = st.radio("Dataset", kinds, index=index, key="tr_data_kind", horizontal=True, format_func=DATA_KINDS.get)
    ui["data_kind"] = kind
    source = {"builtin": _builtin_source, "upload": _upload_source, "hub": _hub_source,
              "local": _local_source}[kind](draft)
    preset = _preset_for_switch(draft["data"]["source"], source)
    if preset is not None:
        apply_preset(preset)
        st.session_state[DRAFT_KEY]["data"]["source"] = source
        st.rerun()
    draft["data"]["source"] = source
    draft["data"]["task"] = _pick_task(draft, source, resolved)
    if not source:
        st.info("Choose a dataset to see a preview.")
        return None
    if not source.startswith("builtin:"):
        _column_pickers(draft, source)
    return _show_preview(draft)


def _builtin_task_of(source: str) -> str | None:
    if not source.startswith("builtin:"):
        return None
    try:
        return core_data.builtin_task(source.removeprefix("builtin:"))
    except core_data.DataError:  # not a built-in name (a stale URL): no task of its own
        return None


def _preset_for_switch(previous: str, source: str) -> RunConfig | None:
    """The recipe to load when the user moves between built-in datasets of different tasks.

    The facts lessons need a chat model, SFT and more epochs; going back to a classification set
    restores the app's defaults. Any other switch keeps what the user chose.
    """
    new_task = _builtin_task_of(source)
    if source == previous or new_task is None:
        return None
    old_task = _builtin_task_of(previous)
    if new_task == "sft" and old_task != "sft":
        return presets.facts_defaults()
    if new_task == "classification" and old_task == "sft":
        return presets.app_defaults()
    return None


def _column_pickers(draft: dict, source: str) -> None:
    # Columns come from the raw table; a wrong pick is reported by the preview, with the columns.
    info = _try_preview(draft, quiet=True)
    columns = (info or {}).get("columns") or []
    d = draft["data"]
    roles = (("text_column", "Text column"), ("label_column", "Label column")) if d["task"] == "classification" \
        else (("prompt_column", "Prompt column"), ("response_column", "Response column"))
    cols = st.columns(len(roles))
    for (field, label), col in zip(roles, cols):
        if columns:
            guess = d[field] if d[field] in columns else columns[min(roles.index((field, label)), len(columns) - 1)]
            index = seed_index(f"tr_d_{field}", guess, columns)
            d[field] = col.selectbox(label, columns, index=index, key=f"tr_d_{field}")
        else:
            typed = seed(f"tr_d_{field}", d[field])
            d[field] = col.text_input(label, typed, key=f"tr_d_{field}").strip()


def _try_preview(draft: dict, quiet: bool = False) -> dict | None:
    d = dict(draft["data"])
    try:
        spec = DataSpec(**d)
        with st.spinner("Reading the dataset…"):
            return _preview(json.dumps(dataclasses.asdict(spec), sort_keys=True), _file_stamp(spec.source))
    except Exception as exc:
        if not quiet:
            show_error(exc)
        return None


def _show_preview(draft: dict) -> dict | None:
    info = _try_preview(draft)
    if info is None:
        return None
    st.caption(f"{info['total_rows']:,} rows · columns: {md_escape(', '.join(map(str, info['columns'])))}")
    if info.get("error"):
        st.error(info["error"])
    balance = info.get("label_balance")
    if balance:
        st.caption("Label balance: " + " · ".join(f"{md_escape(k)}: {v:,}" for k, v in balance.items()))
    for note in info.get("notes") or []:
        st.caption(md_escape(note))
    with st.expander("Preview", expanded=False):
        present.table(info["rows"], hide_index=True)
    return info
