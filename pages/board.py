"""Class board: every finished run on this server in one live chart (the method comparison the class
builds together), and, with ?follow=<run id>, a read-only live view of any one run.

The follow view is for a room watching the teacher's run on their own laptops: charts, progress and
anatomy as on Train, and never a Stop or Delete button (those stay with the owner, on Train/Runs).
"""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from core import board, runs
from core.textsafe import plotly_text
from pages.shared.anatomy import anatomy_view, uses_dora
from pages.shared.charts import metrics_charts
from pages.shared.formatting import fmt_params, fmt_seconds, md_escape, run_label, show_error
from pages.shared.legacy import leave_legacy_multipage_mode
from pages.shared.polling import poll_events
from pages.shared.session import is_admin, manager

BOARD_REFRESH_S = 10.0  # new finished runs appear within this; a board costs a disk listing per poll
FOLLOW_REFRESH_S = 2.0  # progress of a followed run, as on Train
FOLLOW_PARAM = "follow"
FOLLOW_EVENTS_KEY = "_board_follow_events"  # {"id": run id, "events": [...]}: fetch only what is new
# One colour per method, fixed so that LoRA is the same colour on every laptop in the room.
METHOD_COLOURS = {"lora": "#1f77b4", "dora": "#17becf", "qlora": "#9467bd", "ia3": "#2ca02c",
                  "prompt_tuning": "#ff7f0e", "prefix_tuning": "#d62728", "linear_head": "#8c564b",
                  "full": "#7f7f7f", "bitfit": "#bcbd22"}
OTHER_COLOUR = "#e377c2"


def follow_link(run_id: str) -> str:
    # Relative: works whatever path the app is served under.
    return f"./board?{FOLLOW_PARAM}={run_id}"


# ----------------------------------------------------------------------------------- the board

def hover_text(row: dict) -> str:
    settings = ", ".join(f"{k}={v}" for k, v in row["settings"].items())
    lines = [f"<b>{plotly_text(row['name'])}</b>",
             f"by {plotly_text(row['nickname'] or 'someone without a nickname')}",
             f"{plotly_text(row['method'])} on {plotly_text(row['model'])}",
             f"accuracy {row['accuracy']:.1%} · trainable {fmt_params(row['trainable_params'])}"
             f" · train time {fmt_seconds(row['train_time_s'])}"]
    if settings:
        lines.append(plotly_text(settings, max_len=None))
    return "<br>".join(lines)


def board_figure(rows: list[dict], x_key: str, x_title: str) -> go.Figure:
    fig = go.Figure()
    for method in sorted({r["method"] for r in rows}):
        points = [r for r in rows if r["method"] == method and r.get(x_key) is not None]
        if not points:
            continue
        fig.add_trace(go.Scatter(
            x=[r[x_key] for r in points], y=[r["accuracy"] for r in points], mode="markers",
            name=plotly_text(method), marker=dict(size=11, color=METHOD_COLOURS.get(method, OTHER_COLOUR),
                                                    line=dict(width=1, color="white")),
            text=[hover_text(r) for r in points], hovertemplate="%{text}<extra></extra>",
            customdata=[r["id"] for r in points]))
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=30, b=10), xaxis_title=x_title,
                      yaxis_title="held-out accuracy", legend_title_text="method")
    fig.update_xaxes(type="log")
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    return fig


def runs_table(rows: list[dict]) -> None:
    lines = ["| run | by | method | accuracy | trainable | time |", "|---|---|---|---|---|---|"]
    for r in reversed(rows[-30:]):  # the newest first; the chart has all of them
        lines.append(f"| [{md_escape(r['name'])}]({follow_link(r['id'])}) | {md_escape(r['nickname'] or '—')} "
                     f"| {md_escape(r['method'])} | {r['accuracy']:.1%} | {fmt_params(r['trainable_params'])} "
                     f"| {fmt_seconds(r['train_time_s'])} |")
    st.markdown("\n".join(lines))


def training_now() -> None:
    try:
        live = [i for i in runs.list_runs() if i.state in ("running", "queued")]
    except OSError as exc:
        show_error(exc)
        return
    if not live:
        return
    st.markdown("**Training now** (open one to watch it live)")
    for info in live[:20]:
        nickname = info.status.get("nickname")
        who = f" · by {md_escape(nickname)}" if isinstance(nickname, str) and nickname else ""
        st.markdown(f"- [{md_escape(run_label(info))}]({follow_link(info.id)}){who}")


def admin_hide_box(all_rows: list[dict]) -> None:
    with st.expander("Teacher: hide runs from the board"):
        labels = {r["id"]: f"{r['name']} · {r['nickname'] or '—'} · {r['accuracy']:.1%}" for r in all_rows}
        chosen = st.multiselect("Hidden runs", options=list(labels), default=[r["id"] for r in all_rows if r["hidden"]],
                                format_func=lambda i: labels.get(i, i), key="board_hidden")
        if st.button("Save", key="board_hide_save"):
            try:
                for r in all_rows:
                    if r["hidden"] != (r["id"] in chosen):
                        board.set_hidden(r["id"], r["id"] in chosen)
                st.toast("Board updated")
                st.rerun()
            except Exception as exc:
                show_error(exc)


def board_view() -> None:
    st.title("Class board")
    st.caption("Every finished run on this server: held-out accuracy against trainable parameters and "
               "against training time, one colour per method. Hover a point for its settings and who ran it.")

    @st.fragment(run_every=BOARD_REFRESH_S)
    def live() -> None:
        try:
            rows = board.rows()
        except OSError as exc:
            show_error(exc)
            return
        training_now()
        if not rows:
            st.info("No finished run with a held-out accuracy yet: train one on the Train page and it appears here.")
            return
        st.markdown(f"**{len(rows)} run{'s' if len(rows) != 1 else ''}**, "
                    f"{len({r['nickname'] for r in rows if r['nickname']})} people")
        c1, c2 = st.columns(2)
        c1.plotly_chart(board_figure(rows, "trainable_params", "trainable parameters (log)"), key="board_params")
        c2.plotly_chart(board_figure(rows, "train_time_s", "training time, s (log)"), key="board_time")
        runs_table(rows)

    live()
    if is_admin():
        try:
            admin_hide_box(board.rows(include_hidden=True))
        except OSError as exc:
            show_error(exc)


# ------------------------------------------------------------------------------- follow a run

def _poll(run_id: str) -> tuple[dict, list[dict]]:
    return poll_events(run_id, FOLLOW_EVENTS_KEY)


def follow_progress(snap: dict) -> None:
    state = snap["state"]
    if state == "queued":
        st.progress(0.0, text=f"Queued: position {snap.get('position') or '?'}, starts in about "
                              f"{fmt_seconds(snap.get('est_start_s'))}")
        return
    prog = snap.get("progress") or {}
    step, max_steps = prog.get("step"), prog.get("max_steps")
    parts = [f"step {step}/{max_steps}"] if step is not None and max_steps else []
    if state == "running" and snap.get("eta_s") is not None:
        parts.append(f"ETA {fmt_seconds(snap['eta_s'])}")
    latest = snap.get("latest") or {}
    if "eval_accuracy" in latest:
        parts.append(f"accuracy {latest['eval_accuracy']:.1%}")
    st.progress(prog.get("fraction") or 0.0, text=" · ".join(parts) or snap.get("status_message") or state)


def follow_view(run_id: str) -> None:
    st.title("Following a run")
    st.page_link("pages/board.py", label="← Class board")
    if not runs.is_valid_run_id(run_id):
        st.error(f"{md_escape(str(run_id)[:80])} is not a run id: check the link.")
        return
    try:
        info = runs.get_run(run_id)
        first = manager().snapshot(run_id, events=False)
    except Exception as exc:
        show_error(exc)
        return
    live = first["state"] in ("queued", "running")
    nickname = info.status.get("nickname")
    st.markdown(f"**{md_escape(info.name)}**" + (f" · by {md_escape(nickname)}" if isinstance(nickname, str)
                                                 and nickname else ""))
    st.caption("A read-only view: it follows the run live. Only the person who started it can stop it.")

    @st.fragment(run_every=FOLLOW_REFRESH_S if live else None)
    def view() -> None:
        try:
            snap, events = _poll(run_id)
        except Exception as exc:
            show_error(exc)
            return
        st.markdown(f"State: **{snap['state']}**" + (" (stopping)" if snap.get("stopping") else ""))
        follow_progress(snap)
        figs = metrics_charts(events)
        cols = st.columns(2)
        for i, key in enumerate(k for k in ("train_loss", "eval_loss", "eval_accuracy", "eval_perplexity",
                                            "learning_rate") if k in figs):
            cols[i % 2].plotly_chart(figs[key], key=f"follow_chart_{key}")
        if not figs:
            st.caption("Charts appear with the first logged step.")
        if any(ev.get("type") == "anatomy" for ev in events):
            with st.expander("LoRA anatomy", expanded=True):
                anatomy_view(events, "follow_anatomy", dora=uses_dora(info.config), live=live)
        if snap["state"] in ("failed", "interrupted", "cancelled"):
            st.warning(snap.get("message") or snap["state"])
        if live and snap["state"] not in ("queued", "running"):
            st.rerun()  # once: stop polling

    view()


def main() -> None:
    run_id = st.query_params.get(FOLLOW_PARAM)
    if run_id:
        follow_view(run_id)
    else:
        board_view()


leave_legacy_multipage_mode()
main()
