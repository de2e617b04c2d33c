"""Train: model, data, method and hyperparameters -> a queued job; live progress and charts; stop.

Widget state is lost when the user leaves the page, so every choice is also copied into a draft
RunConfig dict under a key no widget owns; widgets are seeded from it when they come back.
"""
from __future__ import annotations

import copy
from collections.abc import Callable

import streamlit as st

from core import limits, presets, recommend, runs
from core.config import ConfigError, DataSpec, RunConfig, TrainSpec, params_schema
from core.device import gpu_driver_present
from core.methods import all_methods
from pages import present
from pages.shared.estimate_card import estimate_panel
from pages.shared.formatting import error_text, md_escape, show_error
from pages.shared.job_panel import current_job, job_panel
from pages.shared.keys import JOB_KEY
from pages.shared.legacy import leave_legacy_multipage_mode
from pages.shared.session import ENGINE_NOTE, engine_ready, manager, owner_id, wait_for_engine, wait_for_warm_up
from pages.shared.train_inputs import data_section, model_section
from pages.shared.train_state import (
    EVENTS_KEY,
    LESSON_MODE_KEY,
    LESSON_MODE_SAVED,
    SCROLL_TO_RUN_KEY,
    seed,
    seed_index,
    train_draft,
    ui_state,
    url_state,
)
from pages.shared.train_url import lesson_header, lesson_link, load_url, write_url
from pages.shared.widgets import controls

# Lesson and presentation mode: Start sits at the top, in a bar that stands out from the form.
ACTION_BAR_CSS = """<style>
.st-key-tr_action_bar { padding: 0.5rem 0.75rem;
  border-radius: 0.5rem; background: BACKGROUND;
  box-shadow: 0 2px 8px rgba(0, 0, 0, 0.15); }
</style>"""
DATA_FIELDS_BASIC = ("max_length", "n_samples", "val_share")
DATA_FIELDS_ADVANCED = ("truncation",)


def method_section(draft: dict, task: str) -> None:
    st.subheader("3 · Method")
    methods = {k: m for k, m in all_methods().items() if task in m.tasks}
    names = list(methods)
    ui = ui_state()
    current = draft["method"]["name"]
    # A method the new task cannot use falls back to LoRA, the page's reason to exist, not to the first.
    index = seed_index("tr_method", current if current in names else "lora", names)
    name = st.selectbox("Method", names, index=index, key="tr_method", format_func=lambda k: methods[k].label)
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
    base = url_state().get("base") or presets.app_defaults().to_dict()
    changes = recommend.on_switch(name, draft, base)
    for path, _, value in changes:
        section, field = path.split(".", 1)
        if section == "train":
            st.session_state[f"tr_t_{field}"] = value
    ui_state()["switch_note"] = (name, f"Switched to {label}: loaded its recommended settings ("
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
    name = seed("tr_t_name", draft.get("name", ""))
    draft["name"] = st.text_input("Run name (optional)", name, key="tr_t_name", max_chars=200).strip()


# ------------------------------------------------------------------------------- before launch

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


def launch_section(draft: dict, resolved: dict | None, preview: dict | None, bar=None) -> Callable | None:
    """The estimate, the problems and Start; with `bar` (lesson or presentation mode) Start and the
    problems are drawn in the action bar at the top of the page instead, where a room sees them.
    Returns what draws the estimate once torch is in, when it could not be drawn yet."""
    st.subheader("5 · Check and start")
    cfg, problem = None, _task_problem(resolved, draft["data"]["task"])
    if not problem:
        try:
            cfg = RunConfig.from_dict(copy.deepcopy(draft))
            # The server's caps (epochs, length, models, memory): say so before the click. The memory
            # check needs torch for the device: on a cold start it follows with the estimate.
            limits.check_run(cfg, fits=engine_ready())
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
    finish_estimate = None
    if cfg is not None and resolved is not None:
        finish_estimate = _estimate_or_note(cfg, preview)
    where = st if bar is None else bar
    if problem:
        where.error(problem)
    busy = _session_job_live()
    if bar is not None:
        _action_bar(bar, draft, cfg, problem, busy)
        return finish_estimate
    if busy:
        st.caption("Your run is still queued or training: its progress is at the top of the page.")
    if st.button("Start training", type="primary", disabled=bool(problem) or busy or cfg is None,
                 key="tr_start"):
        _submit(cfg)
    if cfg is not None:
        with st.expander("Same run from the command line"):
            st.code("python -m core.train --config run.yaml", language="bash")
            st.code(runs.public_yaml(cfg.to_dict()), language="yaml")  # no server path of the upload
    return finish_estimate


def _estimate_or_note(cfg: RunConfig, preview: dict | None) -> Callable | None:
    """The estimate and the memory check need the device (torch): until the warm-up has it, a note
    holds the estimate's place and the rest of the form is drawn; main() then calls the returned
    function, which waits for torch and draws the page again, complete."""
    if engine_ready():
        estimate_panel(cfg, preview)
        return None
    note = ENGINE_NOTE.format(what="the form works now, the estimate follows")
    slot = st.empty()
    slot.info(note, icon=":material/hourglass_top:")

    def finish() -> None:
        wait_for_engine(lambda waited: slot.info(f"{note} ({waited:.0f} s)", icon=":material/hourglass_top:"))
        st.rerun()
    return finish


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
    # The job's worker imports transformers and peft: not while the warm-up thread still does.
    with st.spinner("Loading the engine (torch, transformers, PEFT): your run starts in a few seconds…"):
        wait_for_warm_up()
    try:
        job_id = manager().submit(cfg, owner_id())
    except Exception as exc:
        show_error(exc)
        return
    st.session_state[JOB_KEY] = job_id
    st.session_state.pop(EVENTS_KEY, None)
    st.session_state[SCROLL_TO_RUN_KEY] = True
    st.rerun()


# ------------------------------------------------------------------------------------- the page

def main() -> None:
    st.title("Train")
    loading = st.empty()  # until the form is drawn: a cold start can take seconds under load
    if not engine_ready():
        note = ENGINE_NOTE.format(what="the form is ready")
        loading.info(note, icon=":material/hourglass_top:")
        # A lesson's model depends on the GPU, which only torch can tell; without a GPU driver on
        # the machine there is none to ask about, and the CPU preset draws at once.
        if lesson_link() and gpu_driver_present():
            wait_for_engine(lambda waited: loading.info(f"{note} ({waited:.0f} s)", icon=":material/hourglass_top:"))
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
    draft = train_draft()
    resolved = model_section(draft)
    preview = data_section(draft, resolved)
    method_section(draft, draft["data"]["task"])
    training_section(draft)
    write_url(draft)
    finish_estimate = launch_section(draft, resolved, preview, bar)
    loading.empty()
    if finish_estimate is not None:
        finish_estimate()


leave_legacy_multipage_mode()
main()
