"""Train: model, data, method and hyperparameters -> a queued job; live progress and charts; stop.

Widget state is lost when the user leaves the page, so every choice is also copied into a draft
RunConfig dict under a key no widget owns; widgets are seeded from it when they come back.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os

import plotly.graph_objects as go
import streamlit as st

from core import data as core_data
from core import estimate, lessons, limits, models, presets, recommend, runs, uploads, urlstate
from core.config import ConfigError, DataSpec, RunConfig, TrainSpec, params_schema
from core.methods import all_methods
from core.textsafe import md_text
from pages import present, replay
from pages.ui import (
    poll_events,
    JOB_KEY,
    anatomy_view,
    compute_note,
    device_info,
    error_text,
    fmt_bytes,
    fmt_params,
    fmt_seconds,
    is_admin,
    lesson_box,
    manager,
    md_escape,
    metrics_charts,
    owner_id,
    query_params,
    show_error,
    sync_query_params,
    uses_dora,
)

DRAFT_KEY = "_train_draft"          # the RunConfig dict being edited
UI_KEY = "_train_ui"                # choices that are not part of a RunConfig (which picker, file name)
EVENTS_KEY = "_train_events"        # {"id": run id, "events": [...]}: fetch only what is new
UPLOADS_KEY = "_train_uploads"      # uploader file_id -> (saved path, shown name): save each upload once
URL_KEY = "_train_url"              # {"loaded", "lesson", "base"}: what the URL was read against
URL_WARNINGS_KEY = "_train_url_warnings"
LESSON_MODE_KEY = "tr_lesson_mode"  # the lesson-mode toggle's widget key
LESSON_MODE_SAVED = "_train_lesson_mode"  # its value, kept when the page (and the widget) is left
SCROLL_TO_RUN_KEY = "_train_scroll_to_run"  # set on Start: bring the live progress into view once
# Lesson and presentation mode: Start sits at the top, in a bar that stands out from the form.
ACTION_BAR_CSS = """<style>
.st-key-tr_action_bar { padding: 0.5rem 0.75rem;
  border-radius: 0.5rem; background: BACKGROUND;
  box-shadow: 0 2px 8px rgba(0, 0, 0, 0.15); }
</style>"""
SCROLL_TO_RUN_JS = """<script>
(function() {
  let tries = 0;
  const go = () => {
    const el = window.parent.document.querySelector('.st-key-tr_current_run') ||
               document.querySelector('.st-key-tr_current_run');
    if (el) { el.scrollIntoView({block: 'start', behavior: 'instant'}); return; }
    if (++tries < 40) { setTimeout(go, 100); }
  };
  go();
})();
</script>"""

OTHER_MODEL = "Hub id or local folder…"
DATA_KINDS = {"builtin": "Built-in", "upload": "Upload a file", "hub": "Hub dataset", "local": "Local file path"}
TASK_LABELS = {"classification": "Classification", "sft": "Instruction tuning (SFT)"}
ESTIMATE_KEYS = ("minilm", "smollm2-135m-instruct")  # embedded models whose config ships with estimate
LIVE_REFRESH_S = 2.0   # the progress line while a run is queued or trains
LIVE_CHARTS_S = 10.0   # the charts and the LoRA anatomy (see job_panel for why they differ)
LR_GRID = [1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1]
LABELS = {"learning_rate": "Learning rate", "n_samples": "N samples (0 = all)", "val_share": "Validation share",
          "max_length": "Max length (tokens)", "r": "Rank r", "num_virtual_tokens": "Virtual tokens",
          "use_dora": "DoRA", "use_rslora": "rsLoRA", "lr_scheduler": "LR schedule"}
DATA_FIELDS_BASIC = ("max_length", "n_samples", "val_share")
DATA_FIELDS_ADVANCED = ("truncation",)


# ------------------------------------------------------------------------------ draft state

def _draft() -> dict:
    if DRAFT_KEY not in st.session_state:
        st.session_state[DRAFT_KEY] = presets.app_defaults().to_dict()
    return st.session_state[DRAFT_KEY]


def _ui() -> dict:
    return st.session_state.setdefault(UI_KEY, {"method_params": {}})


def _apply_preset(cfg: RunConfig) -> None:
    """Replace the draft by a preset and drop the widgets' own values so they re-seed from it."""
    st.session_state[DRAFT_KEY] = cfg.to_dict()
    _ui()["method_params"] = {}
    widget_prefixes = ("tr_m_", "tr_method", "tr_t_", "tr_d_", "tr_model")
    for key in [k for k in st.session_state if isinstance(k, str) and k.startswith(widget_prefixes)]:
        del st.session_state[key]


# ------------------------------------------------------------------------- the URL (shareable setup)

def lesson_mode() -> bool:
    return bool(st.session_state.get(LESSON_MODE_KEY))


def _url_state() -> dict:
    return st.session_state.setdefault(URL_KEY, {"loaded": False, "lesson": "", "base": None})


def _data_kind_for(source: str) -> str | None:
    if source.startswith("builtin:"):
        return "builtin"
    if source.startswith("hub:"):
        return "hub"
    return "local" if core_data.local_files_allowed() else None


def load_url() -> None:
    """Read the query string into the draft: on the session's first view of the page, and whenever
    a different lesson link is opened. Afterwards the widgets lead and write_url follows them."""
    params = query_params()
    lesson_key = urlstate.lesson_of(params)
    state = _url_state()
    if state["loaded"] and lesson_key == state["lesson"]:
        return
    warnings = []
    lesson = lessons.get(lesson_key) if lesson_key else None
    if lesson_key and (lesson is None or lesson.page != "train"):
        if lesson is not None:  # an experiments lesson opened on Train: send it where it belongs
            st.switch_page(lesson.page_path, query_params={urlstate.LESSON_KEY: lesson.key})
        warnings.append(f"the link names a lesson {lesson_key!r} that does not exist; showing the usual page")
        lesson_key, lesson = "", None
    base = (lesson.preset() if lesson else presets.app_defaults()).to_dict()
    cfg, problems = urlstate.decode(params, base)
    warnings += problems
    kind = _data_kind_for(cfg["data"]["source"])
    if kind is None:
        warnings.append("the link names a file on the server, and this server does not allow local files; "
                        "using the built-in dataset")
        cfg["data"]["source"] = base["data"]["source"]
        kind = _data_kind_for(base["data"]["source"]) or "builtin"
    if lesson or set(params) - set(urlstate.PAGE_KEYS):
        _apply_preset(RunConfig.from_dict(cfg))
        for key in [k for k in st.session_state if isinstance(k, str) and k.startswith("tr_data_")]:
            del st.session_state[key]
        ui = _ui()
        ui["data_kind"] = kind
        source = cfg["data"]["source"]
        if kind == "builtin":
            ui["builtin"] = source.removeprefix("builtin:")
        elif kind == "local":
            ui["local_path"] = source
    st.session_state[LESSON_MODE_KEY] = st.session_state[LESSON_MODE_SAVED] = urlstate.lesson_mode(params)
    state.update(loaded=True, lesson=lesson_key, base=base)
    if warnings:
        st.session_state[URL_WARNINGS_KEY] = warnings


def lesson_header() -> None:
    """Bad-link warnings, the lesson's info box and the lesson-mode toggle."""
    for text in st.session_state.pop(URL_WARNINGS_KEY, []):
        st.warning(f"This link could not be used in full: {md_text(text)}.")
    state = _url_state()
    lesson = lessons.get(state["lesson"]) if state["lesson"] else None
    if lesson is not None:
        then = ("When the run has finished, press **Compare base vs tuned** below the result."
                if lesson.then == "compare" else "")
        lesson_box(lesson, " ".join(t for t in (_gpu_lesson_note(lesson), then) if t), _lesson_facts())
    if LESSON_MODE_KEY not in st.session_state:  # back from another page: the widget forgot it
        st.session_state[LESSON_MODE_KEY] = bool(st.session_state.get(LESSON_MODE_SAVED))
    st.session_state[LESSON_MODE_SAVED] = st.toggle(
        "Lesson mode", key=LESSON_MODE_KEY,
        help="Hide the advanced controls, so a class sees only what the lesson is about. The setting is part "
             "of the link (lesson=1): copy the address bar to share this exact setup.")


def _gpu_lesson_note(lesson) -> str:
    """On a GPU: which shelf model the lesson trains instead of the embedded one (core.gpu_shelf)."""
    try:
        return lesson.hardware_note()
    except Exception:  # a failed GPU probe leaves the lesson as written
        return ""
def _lesson_facts() -> dict[str, str]:
    """The numbers a lesson's text names (core.lessons.fill): from this session's finished run, else
    from the estimate for the setup on screen, so the text agrees with the cards below it."""
    percent = None
    job_id = st.session_state.get(JOB_KEY)
    if job_id:
        try:
            percent = (manager().snapshot(job_id, events=False).get("summary") or {}).get("trainable_percent")
        except Exception:  # deleted or unreadable: the estimate below still answers
            percent = None
    if not isinstance(percent, (int, float)):
        try:
            cfg = RunConfig.from_dict(copy.deepcopy(_draft()))
            model_cfg, _ = _model_config(cfg.model.name)
            method, kwargs = _estimate_method(cfg)
            percent = estimate.report(model_cfg, method, task=cfg.data.task, **kwargs)["percent"] if model_cfg else None
        except Exception:  # no estimate for this model: the lesson's own words stand
            return {}
    return {"trainable_percent": f"{percent:.3g} %"} if isinstance(percent, (int, float)) else {}


def write_url(draft: dict) -> None:
    """Put the current choices in the address bar: what differs from the lesson's (or app's) preset."""
    state = _url_state()
    if state["lesson"] and not lesson_mode():
        # Leaving lesson mode leaves the lesson: the link now describes the setup on its own.
        state["lesson"] = ""
        state["base"] = None
    base = state.get("base") or presets.app_defaults().to_dict()
    try:
        params = urlstate.encode(draft, base)
    except Exception:  # a half-edited draft must never cost the page
        return
    if state["lesson"]:
        params[urlstate.LESSON_KEY] = state["lesson"]
    elif lesson_mode():
        params[urlstate.LESSON_KEY] = "1"
    sync_query_params(params)


def _seed(key: str, value, options: list | None = None) -> None:
    """Give a keyed widget its starting value, unless it already holds a valid one."""
    current = st.session_state.get(key, None)
    if key in st.session_state and (options is None or current in options):
        return
    if options is not None and value not in options:
        value = options[0]
    st.session_state[key] = value


# ---------------------------------------------------------------------------- generic controls

def _label(f: dict) -> str:
    return LABELS.get(f["name"], f["name"].replace("_", " ").capitalize())


def _log_options(lo, hi, value) -> list[float]:
    grid = [v for v in LR_GRID if (lo is None or v > lo) and (hi is None or v <= hi)]
    if isinstance(value, (int, float)) and value not in grid and value > 0:
        grid = sorted(grid + [float(value)])
    return grid


def _clamp(value, lo, hi):
    if lo is not None and value < lo:
        value = lo
    if hi is not None and value > hi:
        value = hi
    return value


def control(f: dict, key: str, value, where=st):
    """One widget for one hyperparameter, picked from its type and range metadata."""
    label, help_ = _label(f), f.get("help")
    value = f["default"] if value is None else value
    choices, kind = f.get("choices"), f["type"]
    lo, hi, step = f.get("lo"), f.get("hi"), f.get("step")
    if choices:
        _seed(key, value, list(choices))
        return where.selectbox(label, list(choices), key=key, help=help_)
    if kind == "bool":
        _seed(key, bool(value))
        return where.checkbox(label, key=key, help=help_)
    if kind == "str":
        _seed(key, str(value))
        return where.text_input(label, key=key, help=help_)
    if f.get("log"):
        options = _log_options(lo, hi, value)
        _seed(key, float(value), options)
        return where.select_slider(label, options, key=key, help=help_, format_func=lambda v: f"{v:.0e}")
    if kind == "int":
        lo_i = None if lo is None else int(lo) + (1 if f.get("lo_open") else 0)
        hi_i = None if hi is None else int(hi) - (1 if f.get("hi_open") else 0)
        _seed(key, int(_clamp(int(value), lo_i, hi_i)))
        if lo_i is not None and hi_i is not None and hi_i - lo_i <= 256:
            return where.slider(label, lo_i, hi_i, key=key, step=int(step or 1), help=help_)
        return where.number_input(label, lo_i, hi_i, key=key, step=int(step or 1), help=help_)
    step_f = float(step or (0.01 if lo is not None and hi is not None and hi - lo <= 1 else 0.5))
    # Open bounds are left to the config check, which then names the allowed range in its error.
    lo_f = None if lo is None or f.get("lo_open") else float(lo)
    hi_f = None if hi is None else float(hi) - (step_f if f.get("hi_open") else 0.0)
    _seed(key, float(_clamp(float(value), lo_f, hi_f)))
    if lo_f is not None and hi_f is not None and hi_f - lo_f <= 1:
        return where.slider(label, lo_f, hi_f, key=key, step=step_f, help=help_)
    return where.number_input(label, lo_f, hi_f, key=key, step=step_f, help=help_)


def controls(schema: list[dict], values: dict, prefix: str, advanced_title: str = "Advanced",
             columns: int = 3) -> dict:
    """Widgets for a schema: basic ones in columns, advanced ones in an expander."""
    out = {}
    basic = [f for f in schema if not f.get("advanced")]
    advanced = [f for f in schema if f.get("advanced")]
    cols = st.columns(columns) if basic else []
    for i, f in enumerate(basic):
        out[f["name"]] = control(f, f"{prefix}{f['name']}", values.get(f["name"]), cols[i % columns])
    if advanced and (lesson_mode() or present.enabled()):
        # Hidden, not reset: a lesson link's advanced values (or the user's earlier ones) still apply.
        for f in advanced:
            value = st.session_state.get(f"{prefix}{f['name']}", values.get(f["name"]))
            out[f["name"]] = f["default"] if value is None else value
    elif advanced:
        # Keyed: a keyless expander's open state follows its position, so the "Current run" block
        # appearing above on Start would hand it to the method's Advanced expander.
        with st.expander(advanced_title, key=f"{prefix}advanced"):
            acols = st.columns(columns)
            for i, f in enumerate(advanced):
                out[f["name"]] = control(f, f"{prefix}{f['name']}", values.get(f["name"]), acols[i % columns])
    return out


# ------------------------------------------------------------------------------------- cached core

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


@st.cache_data(ttl=120, max_entries=64, show_spinner=False)
def _model_config(name: str) -> tuple[dict | None, str]:
    """The config dict core.estimate reads, or None and why it cannot be had (offline, odd family)."""
    try:
        from core import gpu_shelf
        if name in ESTIMATE_KEYS or gpu_shelf.get(name):  # shipped configs: no Hub call
            return estimate.load_config(name), ""
        cfg = models.load_config(name).to_dict()
        estimate.dims(cfg)  # an architecture estimate does not know fails here, once
        return cfg, ""
    except Exception as exc:  # the estimate is a side card: say why it is missing, keep the form
        return None, error_text(exc)


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
    entries += [e for e in _gpu_shelf_entries() if e.key not in {x.key for x in entries}]
    keys = [e.key for e in entries] + [OTHER_MODEL]
    labels = {e.key: e.label for e in entries}
    current = draft["model"]["name"]
    _seed("tr_model_pick", current if current in labels else OTHER_MODEL, keys)
    col_pick, col_other = st.columns([1, 1])
    pick = col_pick.selectbox("Base model", keys, key="tr_model_pick", format_func=lambda k: labels.get(k, k))
    if pick == OTHER_MODEL:
        _seed("tr_model_custom", "" if current in labels else current)
        name = col_other.text_input("Hub id or local folder", key="tr_model_custom",
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
    _seed("tr_data_builtin", current.removeprefix("builtin:") if current.startswith("builtin:")
          else _ui().get("builtin", ""), list(builtins))
    name = st.selectbox("Built-in dataset", list(builtins), key="tr_data_builtin",
                        format_func=lambda n: f"{n} — {builtins[n]}")
    _ui()["builtin"] = name
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
        _ui()["upload"] = (path, shown)
        return path
    previous = _ui().get("upload")
    if previous and os.path.exists(previous[0]):  # the uploader forgets its file on a page switch
        st.caption(f"Using the file uploaded earlier: {md_escape(previous[1])}")
        return previous[0]
    return ""


def _hub_source(draft: dict) -> str:
    current = draft["data"]["source"]
    _seed("tr_data_hub", current.removeprefix("hub:") if current.startswith("hub:") else "")
    _seed("tr_data_split", draft["data"].get("hub_split") or "train")
    c1, c2 = st.columns([3, 1])
    ref = c1.text_input("Hub dataset id", key="tr_data_hub", placeholder="e.g. stanfordnlp/imdb").strip()
    draft["data"]["hub_split"] = c2.text_input("Split", key="tr_data_split").strip() or "train"
    return f"hub:{ref}" if ref else ""


def _local_source(draft: dict) -> str:
    _seed("tr_data_local", _ui().get("local_path", ""))
    path = st.text_input("Local file path (on the server)", key="tr_data_local",
                         placeholder="/path/to/data.jsonl").strip()
    _ui()["local_path"] = path
    return path


def _pick_task(draft: dict, source: str, resolved: dict | None) -> str:
    if source.startswith("builtin:"):
        task = _builtin_task_of(source) or draft["data"]["task"]  # unknown name: the preview says so
        st.caption(f"Task: **{TASK_LABELS[task]}** (set by the dataset)")
        return task
    allowed = list(TASK_LABELS)
    _seed("tr_data_task", draft["data"]["task"], allowed)
    return st.radio("Task", allowed, key="tr_data_task", horizontal=True, format_func=TASK_LABELS.get)


def data_section(draft: dict, resolved: dict | None) -> dict | None:
    """Dataset, task, columns and preview; returns the preview dict (or None)."""
    st.subheader("2 · Data")
    kinds = ["builtin", "upload", "hub"] + (["local"] if core_data.local_files_allowed() else [])
    ui = _ui()
    _seed("tr_data_kind", ui.get("data_kind", "builtin"), kinds)
    kind = st.radio("Dataset", kinds, key="tr_data_kind", horizontal=True, format_func=DATA_KINDS.get)
    ui["data_kind"] = kind
    source = {"builtin": _builtin_source, "upload": _upload_source, "hub": _hub_source,
              "local": _local_source}[kind](draft)
    preset = _preset_for_switch(draft["data"]["source"], source)
    if preset is not None:
        _apply_preset(preset)
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
            _seed(f"tr_d_{field}", guess, columns)
            d[field] = col.selectbox(label, columns, key=f"tr_d_{field}")
        else:
            _seed(f"tr_d_{field}", d[field])
            d[field] = col.text_input(label, key=f"tr_d_{field}").strip()


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


def method_section(draft: dict, task: str) -> None:
    st.subheader("3 · Method")
    methods = {k: m for k, m in all_methods().items() if task in m.tasks}
    names = list(methods)
    ui = _ui()
    current = draft["method"]["name"]
    # A method the new task cannot use falls back to LoRA, the page's reason to exist, not to the first.
    _seed("tr_method", current if current in names else "lora", names)
    name = st.selectbox("Method", names, key="tr_method", format_func=lambda k: methods[k].label)
    method = methods[name]
    st.caption(method.summary)
    if name != current:
        _switch_method_defaults(draft, name, methods[name].label)
    note = ui.get("switch_note")
    if note and note[0] == name and note[1]:
        st.info(note[1])
    remembered = ui["method_params"].get(name)
    if remembered is None:
        remembered = draft["method"]["params"] if name == current else {}
    params = controls(method.schema(), remembered, f"tr_m_{name}_")
    ui["method_params"][name] = params
    draft["method"] = {"name": name, "params": params}


def _switch_method_defaults(draft: dict, name: str, label: str) -> None:
    """A new method brings the training settings it learns with (core.recommend), and says so.

    The training widgets are drawn after this, so their keys can still be set in this run."""
    base = _url_state().get("base") or presets.app_defaults().to_dict()
    changes = recommend.on_switch(name, draft, base)
    for path, _, value in changes:
        section, field = path.split(".", 1)
        if section == "train":
            st.session_state[f"tr_t_{field}"] = value
    _ui()["switch_note"] = (name, f"Switched to {label}: loaded its recommended settings ("
                                  f"{recommend.describe(changes)})." if changes else "")


def training_section(draft: dict) -> None:
    st.subheader("4 · Training")
    train_schema = params_schema(TrainSpec)
    data_schema = {f["name"]: f for f in params_schema(DataSpec) if f.get("help")}
    basic = [f for f in train_schema if not f.get("advanced")]
    basic += [dict(data_schema[n], advanced=False) for n in DATA_FIELDS_BASIC]
    advanced = [f for f in train_schema if f.get("advanced")]
    advanced += [dict(data_schema[n], advanced=True) for n in DATA_FIELDS_ADVANCED]
    values = {**draft["data"], **draft["train"]}
    chosen = controls(basic + advanced, values, "tr_t_", columns=4)
    for key, value in chosen.items():
        section = "data" if key in data_schema and key not in draft["train"] else "train"
        draft[section][key] = value
    warning = recommend.learning_rate_warning(draft["method"]["name"], draft["train"].get("learning_rate"))
    if warning:
        st.warning(warning)
    _seed("tr_t_name", draft.get("name", ""))
    draft["name"] = st.text_input("Run name (optional)", key="tr_t_name", max_chars=200).strip()


# ------------------------------------------------------------------------------- before launch

def _estimate_method(cfg: RunConfig) -> tuple[str, dict]:
    """Our method spec -> core.estimate's method name and keyword arguments."""
    return estimate.method_args({"name": cfg.method.name, "params": cfg.method.params})


def _estimate_compute(cfg: RunConfig) -> tuple[dict, str]:
    """The run's weights dtype, autocast and device, as core.estimate takes them, and a note when
    they had to be assumed."""
    dtype = cfg.model.dtype
    # The hardware probe or the method lookup can fail on an odd machine: the estimate then
    # assumes plain fp32 on a CPU rather than losing the card, and says so.
    try:
        from core.trainer_setup import precision_label
        device = device_info().get("device") or "cpu"
        if dtype == "auto":
            dtype = device_info().get("dtype") or "float32"
        autocast = "mixed" in precision_label(cfg, device)
    except Exception as exc:
        assumed = {"dtype": "float32" if dtype == "auto" else dtype, "device": "cpu", "flash_attention": True}
        return assumed, f"Estimated for a CPU without mixed precision: the hardware check failed ({error_text(exc)})."
    # transformers attends with SDPA by default; the estimator knows its fused and fallback paths
    return {"dtype": dtype, "autocast": autocast, "device": "cpu" if device == "cpu" else "cuda",
            "flash_attention": True}, ""


def estimate_panel(cfg: RunConfig, preview: dict | None) -> None:
    model_cfg, why = _model_config(cfg.model.name)
    if model_cfg is None:
        st.caption(f"Parameter and memory estimate unavailable for this model: {why}")
        return
    method, kwargs = _estimate_method(cfg)
    balance = (preview or {}).get("label_balance") or {}
    compute, assumed = _estimate_compute(cfg)
    try:
        rep = estimate.report(model_cfg, method, batch_size=cfg.train.batch_size, seq_len=cfg.data.max_length,
                              num_labels=max(2, len(balance)), task=cfg.data.task, **compute, **kwargs,
                              gradient_checkpointing=cfg.train.gradient_checkpointing)
    except Exception as exc:
        st.caption(f"Parameter and memory estimate unavailable for this choice: {error_text(exc)}")
        return
    mem = rep["memory"]
    c1, c2 = st.columns(2)
    c1.metric("Trainable parameters", fmt_params(rep["trainable"]), help=f"of {fmt_params(rep['total'])} in all")
    c1.caption(f"{rep['percent']:.3g}% of {fmt_params(rep['total'])}")
    c2.metric("Training memory (estimate)", fmt_bytes(mem["total"]),
              help="Weights + gradients + AdamW states + activations for one batch, and on a CPU the "
                   "freed memory the allocator keeps (workspace). Not counted: the process itself (on a CPU "
                   f"about {estimate.CPU_PROCESS_FLOOR_MB / 1000:.1f} GB for Python, torch and the libraries)")
    parts = ["weights", "gradients", "optimizer", "activations"] + (["workspace"] if mem["workspace"] else [])
    fig = go.Figure(go.Bar(x=parts, y=[mem[p] / 2**20 for p in parts], text=[fmt_bytes(mem[p]) for p in parts],
                           textposition="auto"))
    fig.update_layout(height=220, margin=dict(l=10, r=10, t=10, b=10), yaxis_title="MB")
    st.plotly_chart(present.figure(fig), key="tr_estimate_chart")
    if assumed:
        st.caption(assumed)


def _task_problem(resolved: dict | None, task: str) -> str:
    if resolved and task not in resolved["tasks"]:
        return (f"{resolved['label']} is an encoder: it can classify text but not generate answers; "
                "choose a chat model such as SmolLM2 for instruction tuning")
    return ""


def _session_job_live() -> bool:
    job_id = st.session_state.get(JOB_KEY)
    if not job_id:
        return False
    try:
        return manager().snapshot(job_id, events=False)["state"] in ("queued", "running")
    except runs.NotFound:
        return False  # deleted from the Runs page: nothing of this session's is training
    except Exception as exc:
        show_error(exc)
        return False


def launch_section(draft: dict, resolved: dict | None, preview: dict | None, bar=None) -> None:
    """The estimate, the problems and Start; with `bar` (lesson or presentation mode) Start and the
    problems are drawn in the action bar at the top of the page instead, where a room sees them."""
    st.subheader("5 · Check and start")
    cfg, problem = None, _task_problem(resolved, draft["data"]["task"])
    if not problem:
        try:
            cfg = RunConfig.from_dict(copy.deepcopy(draft))
            limits.check_run(cfg)  # the server's caps (epochs, length, models): say so before the click
        except ConfigError as exc:
            problem = str(exc)
        except Exception as exc:  # a bug in a check must still not show a traceback
            problem = error_text(exc)
    if resolved is None:
        problem = problem or "choose a model that can be loaded (see above)"
    if not draft["data"]["source"]:
        problem = problem or "choose a dataset"
    if preview is not None and preview.get("error"):
        problem = problem or preview["error"]
    if cfg is not None and resolved is not None:
        estimate_panel(cfg, preview)
    where = st if bar is None else bar
    if problem:
        where.error(problem)
    busy = _session_job_live()
    if bar is not None:
        _action_bar(bar, draft, cfg, problem, busy)
        return
    if busy:
        st.caption("Your run is still queued or training: its progress is at the top of the page.")
    if st.button("Start training", type="primary", disabled=bool(problem) or busy or cfg is None,
                 key="tr_start"):
        _submit(cfg)
    if cfg is not None:
        with st.expander("Same run from the command line"):
            st.code("python -m core.train --config run.yaml", language="bash")
            st.code(runs.public_yaml(cfg.to_dict()), language="yaml")  # no server path of the upload


def _action_bar(bar, draft: dict, cfg: RunConfig | None, problem: str, busy: bool) -> None:
    """Start, and one line saying what it will train, at the top of the page."""
    with bar:
        c1, c2 = st.columns([1, 3], vertical_alignment="center")
        if c1.button("Start training", type="primary", disabled=bool(problem) or busy or cfg is None,
                     key="tr_start", width="stretch"):
            _submit(cfg)
        t = draft["train"]
        what = (f"{md_escape(draft['model']['name'])} · {md_escape(draft['method']['name'])} · "
                f"learning rate {t.get('learning_rate', 0):.0e} · {t.get('epochs', 0):g} epoch(s)")
        c2.markdown(what + ("  \nYour run is queued or training: its progress is just below."
                            if busy else ""))
    st.html(ACTION_BAR_CSS.replace("BACKGROUND", present.background()))


def _submit(cfg: RunConfig) -> None:
    try:
        job_id = manager().submit(cfg, owner_id())
    except Exception as exc:
        show_error(exc)
        return
    st.session_state[JOB_KEY] = job_id
    st.session_state.pop(EVENTS_KEY, None)
    st.session_state[SCROLL_TO_RUN_KEY] = True
    st.rerun()


# ------------------------------------------------------------------------------------ the job

def current_job() -> str | None:
    """This session's latest run, else this browser's (after a reload: the owner cookie), else the run training now."""
    job_id = st.session_state.get(JOB_KEY)
    if job_id:
        return job_id
    try:
        job_id = manager().latest_for(owner_id())
        if job_id:
            st.session_state[JOB_KEY] = job_id  # followed like one started in this session
            return job_id
        active = manager().active()
    except Exception as exc:
        show_error(exc)
        return None
    return active["id"] if active else None


def poll(job_id: str) -> tuple[dict, list[dict]]:
    """The job's snapshot and all its events so far."""
    return poll_events(job_id, EVENTS_KEY)


def _poll_shown(job_id: str) -> tuple[dict, list[dict]] | None:
    """poll(), or None with the error shown in place (the run was deleted meanwhile, a disk error)."""
    try:
        return poll(job_id)
    except Exception as exc:
        show_error(exc)
        return None


def _phase(events: list[dict], snap: dict) -> str:
    for ev in reversed(events):
        if ev.get("type") == "phase":
            return str(ev.get("phase"))
        if ev.get("type") in ("start", "progress", "eval"):
            scored = any(e.get("type") == "start" and e.get("n_val") for e in events)
            return "scoring the untouched model before the first step" if scored else "starting the first step"
    return snap.get("status_message") or "starting"


def progress_block(snap: dict, events: list[dict]) -> None:
    state = snap["state"]
    if state == "queued":
        from pages.classroom import wait_text
        st.progress(0.0, text=f"Queued: place {snap.get('position')} of {snap.get('queue_length')}, {wait_text(snap)}")
        return
    prog = snap["progress"]
    step, max_steps = prog.get("step"), prog.get("max_steps")
    if state == "running" and (not step or not max_steps):
        st.progress(0.0, text=f"{_phase(events, snap).capitalize()}…")
        return
    parts = [f"step {step}/{max_steps}"] if max_steps else []
    if prog.get("epoch") is not None:
        parts.append(f"epoch {prog['epoch']:.2f}")
    if snap.get("samples_per_second"):
        parts.append(f"{snap['samples_per_second']:.1f} samples/s")
    if state == "running" and snap.get("eta_s") is not None:
        parts.append(f"ETA {fmt_seconds(snap['eta_s'])}")
    if snap.get("stopping"):
        parts.append("stopping…")
    st.progress(prog.get("fraction") or 0.0, text=" · ".join(parts) or state)


def charts_block(events: list[dict], sft: bool) -> None:
    figs = metrics_charts(events)
    if not figs:
        st.caption("Charts appear with the first logged step.")
        return
    quality = "eval_perplexity" if sft else "eval_accuracy"
    order = [k for k in ("train_loss", "eval_loss", quality, "learning_rate") if k in figs]
    cols = st.columns(2)
    for i, key in enumerate(order):
        with cols[i % 2]:
            st.plotly_chart(present.figure(figs[key]), key=f"tr_chart_{key}")


def stop_button(job_id: str, snap: dict) -> None:
    if snap["state"] not in ("queued", "running") or snap.get("stopping"):
        return
    admin = is_admin()
    if not manager().can_access(job_id, owner_id(), admin):
        st.caption("This run belongs to another session: only its owner or an admin can stop it.")
        return
    label = "Cancel" if snap["state"] == "queued" else "Stop"
    if st.button(label, key="tr_stop"):
        try:
            manager().stop(job_id, owner_id(), admin=admin)
            st.toast("Stopping after the current step…")
        except Exception as exc:
            show_error(exc)


def job_panel(job_id: str) -> None:
    try:
        snap, _ = poll(job_id)
    except Exception as exc:
        if st.session_state.get(JOB_KEY) == job_id:
            st.session_state.pop(JOB_KEY, None)  # deleted from the Runs page: forget it
        show_error(exc)
        return
    live = snap["state"] in ("queued", "running")
    drawn_queued = snap["state"] == "queued"
    config = _run_config(job_id)
    sft = (config.get("data") or {}).get("task") == "sft"

    # Two timers, both slow on purpose. In Chromium every rerun of a fragment costs ~0.1 CPU-s on
    # this page and a redraw of the charts 0.4-0.6; where the browser shares the trainer's cores (a
    # laptop, a classroom PC, the benchmark) that is taken from training, and with two OpenMP
    # threads waiting for each other the trainer loses more than the browser takes. Progress every
    # 2 s and charts every 10 s (instead of both every second) took the app from 0.76 to 0.91 of
    # headless samples/s (BENCHMARKS.md).
    @st.fragment(run_every=LIVE_REFRESH_S if live else None)
    def live_status() -> None:
        polled = _poll_shown(job_id)
        if polled is None:
            return
        snap, events = polled
        st.markdown(f"**{md_escape(snap['name'])}** · {snap['state']}")
        progress_block(snap, events)
        stop_button(job_id, snap)
        if live and snap["state"] not in ("queued", "running"):
            st.rerun()  # once: the page draws the result and stops polling
        if drawn_queued and snap["state"] == "running":
            st.rerun()  # once: the sidebar then leaves this job's progress to this page (app.py)

    @st.fragment(run_every=LIVE_CHARTS_S if live else None)
    def live_charts() -> None:
        polled = _poll_shown(job_id)
        if polled is None:
            return
        snap, events = polled
        charts_block(events, sft)
        if snap["state"] in ("queued", "running"):
            anatomy_block(events, config, live=True)
            return
        # The result is drawn by a fragment, so whichever run paints it last (its own timer or the
        # full rerun) shows it: drawn after the fragments, the card was sometimes missing in the
        # browser when a timer run and the full rerun crossed.
        result_block(job_id, snap, events)

    with st.container(key="tr_current_run"):
        st.subheader("Current run")
        # The class watches it on their own laptops (pages/board.py: read-only, no Stop).
        st.caption(f"Share it: [a live, read-only view of this run](./board?follow={job_id}) for others to follow.")
        if st.session_state.pop(SCROLL_TO_RUN_KEY, False):
            st.html(SCROLL_TO_RUN_JS, unsafe_allow_javascript=True)
        live_status()
        live_charts()
        if not live:
            replay.section(job_id, snap.get("name") or job_id, _recorded_events())


def _recorded_events() -> list[dict]:
    return (st.session_state.get(EVENTS_KEY) or {}).get("events") or []


def _run_config(job_id: str) -> dict:
    try:
        return runs.get_run(job_id).config or {}
    except runs.NotFound:
        return {}  # deleted meanwhile: job_panel's poll says so
    except Exception as exc:
        show_error(exc)
        return {}



# --------------------------------------------------------------------------------- the result

def _initial_metrics(summary: dict, events: list[dict]) -> dict:
    if summary.get("initial"):
        return summary["initial"]
    for ev in events:  # eval_on_start: the first evaluation scores the untouched model
        if ev.get("type") == "eval":
            return ev
    return {}


def result_block(job_id: str, snap: dict, events: list[dict]) -> None:
    state = snap["state"]
    if state == "failed":
        message = snap.get("error") or snap.get("message") or "the run failed"
        # The job followed may be another visitor's, and its message may quote their data.
        st.error(md_text(message, 600) + (f". Hint: {md_text(snap['hint'])}" if snap.get("hint") else ""))
        return
    if state in ("cancelled", "interrupted"):
        st.warning(md_text(snap.get("message") or state, 600))
        return
    summary = snap.get("summary") or {}
    if state == "stopped":
        st.info(md_text(snap.get("message") or "stopped", 600))
    if not summary:
        return
    summary_card(summary, events)
    anatomy_block(events, _run_config(job_id))
    actions(job_id, summary)


def summary_card(summary: dict, events: list[dict]) -> None:
    final, initial = summary.get("final") or {}, _initial_metrics(summary, events)
    with st.container(border=True):
        st.markdown("**Result**")
        c = st.columns(4)
        if "eval_accuracy" in final:
            before = initial.get("eval_accuracy")
            c[0].metric("Validation accuracy", f"{final['eval_accuracy']:.1%}",
                        delta=None if before is None else f"{(final['eval_accuracy'] - before) * 100:+.1f} pts",
                        help=None if before is None else f"before training: {before:.1%}")
        elif "eval_perplexity" in final:
            before = initial.get("eval_perplexity")
            c[0].metric("Validation perplexity", f"{final['eval_perplexity']:.3g}",
                        delta=None if before is None else f"{final['eval_perplexity'] - before:+.3g}",
                        delta_color="inverse")
        else:  # no validation rows (e.g. the facts lesson): the last training loss, not an empty slot
            losses = [ev["loss"] for ev in events
                      if ev.get("type") == "log" and isinstance(ev.get("loss"), (int, float))]
            if losses:
                c[0].metric("Training loss (last)", f"{losses[-1]:.4f}", help="No validation rows in this run: "
                            "this is the loss on the training rows, which says less about new questions.")
        if "eval_loss" in final:
            c[1].metric("Validation loss", f"{final['eval_loss']:.4f}")
        c[2].metric("Trainable", f"{summary.get('trainable_percent', 0):.3g}%",
                    help=f"{fmt_params(summary.get('trainable_params'))} of {fmt_params(summary.get('total_params'))}")
        c[3].metric("Train time", fmt_seconds(summary.get("train_time_s")))
        c = st.columns(4)
        peak = summary.get("peak_cuda_mb") or summary.get("peak_rss_mb")
        label = "Peak GPU memory" if summary.get("peak_cuda_mb") else "Peak process memory"
        c[0].metric(label, fmt_bytes(peak * 2**20) if isinstance(peak, (int, float)) else "—")
        latency = summary.get("latency_ms_per_sample")
        # Short values: a quarter-width metric cuts anything longer than about 12 characters.
        c[1].metric("Latency per sample", f"{latency:.1f} ms" if isinstance(latency, (int, float)) else "—")
        sps = summary.get("samples_per_second")
        c[2].metric("Samples per second", f"{sps:.1f}" if isinstance(sps, (int, float)) else "—",
                    help=compute_note(summary))
        c[3].metric("Rows (train / val)", f"{summary.get('n_train', 0):,} / {summary.get('n_val', 0):,}")


def anatomy_block(events: list[dict], config: dict | None = None, live: bool = False) -> None:
    """What LoRA has changed so far (pages.ui.anatomy_view, the same picture as on Runs)."""
    if not any(ev.get("type") == "anatomy" and ev.get("layers") for ev in events):
        return
    with st.expander("LoRA anatomy", expanded=live):
        anatomy_view(events, "tr_live_anatomy" if live else "tr_anatomy", dora=uses_dora(config), live=live)


def actions(job_id: str, summary: dict) -> None:
    c1, c2 = st.columns(2)
    if c1.button("Compare base vs tuned", key="tr_compare"):
        st.session_state["compare_run"] = job_id
        lesson = _url_state()["lesson"]  # a lesson that continues on Compare keeps its guidance there
        st.switch_page("pages/compare.py", query_params={urlstate.LESSON_KEY: lesson} if lesson else None)
    owner, admin = owner_id(), is_admin()
    try:
        allowed = manager().can_access(job_id, owner, admin)
        has_weights = runs.get_run(job_id).has_weights
    except Exception as exc:
        show_error(exc)
        return
    if allowed and has_weights:
        # Deferred: a full fine-tune's weights are hundreds of MB; zip them only when asked.
        c2.download_button("Download weights (zip)", data=lambda: manager().weights_zip(job_id, owner, admin),
                           file_name=f"{job_id}.zip", mime="application/zip", key="tr_download")


# ------------------------------------------------------------------------------------- the page

def main() -> None:
    st.title("Train")
    load_url()
    # In front of a room Start goes first and the run right under it, above the lesson's text:
    # both in the first screen at 1280x720 (issue 23).
    lesson_on = (st.session_state.get(LESSON_MODE_KEY) if LESSON_MODE_KEY in st.session_state
                 else st.session_state.get(LESSON_MODE_SAVED))
    staged = bool(lesson_on or present.enabled())
    bar = st.container(key="tr_action_bar") if staged else None
    job_id = current_job()
    if job_id and staged:
        job_panel(job_id)
    lesson_header()
    if job_id and not staged:
        job_panel(job_id)
        st.divider()
    draft = _draft()
    resolved = model_section(draft)
    preview = data_section(draft, resolved)
    method_section(draft, draft["data"]["task"])
    training_section(draft)
    write_url(draft)
    launch_section(draft, resolved, preview, bar)


main()
