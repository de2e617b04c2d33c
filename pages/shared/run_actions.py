"""What a visitor may do with a run on the Runs page: delete, resume, take the script and the model home."""
from __future__ import annotations

import os

import streamlit as st

from core import runs
from core.config import ConfigError
from pages.shared.formatting import error_text, fmt_bytes, show_error
from pages.shared.keys import COMPARE_RUN_KEY, JOB_KEY, TRAIN_EVENTS_KEY
from pages.shared.session import manager

FLASH_KEY = "_runs_flash"   # a message to show once after a rerun (e.g. "deleted")


def delete_run(run_id: str, me: str, admin: bool) -> None:
    try:
        manager().delete(run_id, me, admin)
    except Exception as exc:
        show_error(exc)
        return
    from core import model_cache
    model_cache.discard(runs.run_dir_for(run_id))  # its model, if the Compare page had it loaded
    for key in ("runs_detail", "runs_confirm_delete"):
        st.session_state.pop(key, None)
    if st.session_state.get(COMPARE_RUN_KEY) == run_id:
        st.session_state.pop(COMPARE_RUN_KEY, None)
    st.session_state[FLASH_KEY] = f"Deleted run {run_id}."
    st.rerun()


def resume_run(info, me: str, admin: bool) -> None:
    from core.config import RunConfig
    try:
        new_id = manager().submit(RunConfig.from_dict(info.config), me, resume_from=info.id, admin=admin)
    except Exception as exc:
        show_error(exc)
        return
    st.session_state[JOB_KEY] = new_id  # the Train page follows it live
    st.session_state.pop(TRAIN_EVENTS_KEY, None)
    st.session_state[FLASH_KEY] = (f"Resuming from the last checkpoint of {info.id} as run {new_id}; "
                                   "follow it on the Train page.")
    st.rerun()


@st.cache_data(show_spinner=False, max_entries=16)
def _cached_script(run_id: str, mtime: float) -> str:
    # Only ever reached through _script, after the owner check.
    try:
        from core import export
        return export.script_for(run_id, None, admin=True)
    except Exception as exc:  # the download still succeeds, and says why
        return f"# This run could not be exported as a script: {error_text(exc)}\n"


def _script(run_id: str, me: str, admin: bool, mtime: float) -> str:
    """The exported script, made when first asked for (it reads the run's data), once per run."""
    if not manager().can_access(run_id, me, admin):
        return "# Only the session that started this run (or an admin) can export its script.\n"
    return _cached_script(run_id, mtime)


def config_yaml(run_id: str, me: str, admin: bool) -> str:
    try:
        return manager().config_yaml(run_id, me, admin)
    except Exception as exc:
        return f"# The config could not be read: {error_text(exc)}\n"


def allowed_config(info, me: str, admin: bool) -> bool:
    try:
        return manager().can_access(info.id, me, admin)
    except OSError:
        return False


def _merged(run_id: str, me: str, admin: bool) -> bytes:
    from core import export
    return export.merged_zip_for(run_id, me, admin)


def _trains(info) -> bool:
    from core.methods import get_method
    try:
        return get_method(((info.config or {}).get("method") or {}).get("name", "")).trains
    except (ConfigError, AttributeError):  # an unknown method, or a config that is not a mapping
        return False


def export_section(info, me: str, admin: bool) -> None:
    """A standalone training script for any run; the merged model where it is reasonable."""
    from core import export
    st.markdown("**Take it home**")
    allowed = allowed_config(info, me, admin)
    e1, e2 = st.columns(2)
    with e1:
        if not allowed:
            # The script embeds the training rows: someone else's uploaded data is not ours to hand out.
            st.caption("The training script embeds this run's data: only the session that started it can "
                       "download it.")
        elif info.state not in ("completed", "stopped"):
            st.caption("The training script is offered once the run has finished.")
        elif not _trains(info):
            st.caption("This method trains nothing, so there is no training script to export.")
        else:
            try:
                mtime = os.path.getmtime(os.path.join(info.dir, "summary.json"))
            except OSError:
                mtime = 0.0
            st.download_button("Training script (Python)", data=lambda: _script(info.id, me, admin, mtime),
                               file_name=f"train_{info.id}.py", mime="text/x-python", key="runs_dl_script",
                               help="transformers + peft only, nothing of this app: the same rows, seed and "
                                    "settings; it prints the final training loss to compare with this run's")
            loss = export.final_training_loss(info.dir)
            if loss is not None:
                st.caption(f"This run's final training loss: {loss:.6g}; the script prints its own.")
    with e2:
        ok, why, size = export.merge_check(info.dir)
        if not info.has_weights:
            st.caption("No weights were saved, so there is no merged model.")
        elif not ok:
            st.caption(f"No merged model: {why}.")
        elif not allowed:
            st.caption("Only the session that started this run can download its merged model.")
        else:
            st.download_button(f"Merged model (zip, ~{fmt_bytes(size)})", key="runs_dl_merged",
                               data=lambda: _merged(info.id, me, admin), file_name=f"{info.id}-merged.zip",
                               mime="application/zip",
                               help="The adapter folded into the base weights (peft merge_and_unload): one "
                                    "ordinary model, no peft needed to run it, no extra latency")
