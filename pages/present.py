"""Presentation mode and the theme: the app as a room sees it on a projector.

    present=1 in any link (or the sidebar toggle) -> body text 20 px, chart fonts >= 16 px, one chart
    per row, tables that wrap, advanced controls and Streamlit's chrome hidden.
    theme=light|dark in a link (or the sidebar choice) -> that theme; absent -> the system's.

Pages call figure(fig) on every Plotly figure they draw and table(df) for their tables; both are
no-ops outside presentation mode. app.py calls apply() once per run, before the page.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

import plotly.graph_objects as go
import streamlit as st

PRESENT_URL_KEY = "present"
THEME_URL_KEY = "theme"
URL_KEYS = (PRESENT_URL_KEY, THEME_URL_KEY)   # kept in the address bar by pages.shared.links.sync_query_params
THEMES = ("system", "light", "dark")
THEME_LABELS = {"system": "Follow the system", "light": "Light", "dark": "Dark"}
PRESENT_KEY = "_present_mode"     # outlives the widget (widget state is dropped on a page switch)
THEME_KEY = "_present_theme"
TOGGLE_KEY = "present_toggle"
THEME_PICK_KEY = "present_theme_pick"
APPLIED_THEME_KEY = "_present_theme_applied"

# Sizes for the back of a room (issue 23): body >= 20 px, chart text >= 16 px.
BODY_PX = 20
CHART_TICK_PX = 18
CHART_TEXT_PX = 18
CHART_TITLE_PX = 22
CHART_MIN_HEIGHT = 380
# The pages' paths: Streamlit keeps the chosen theme per path in localStorage.
PAGE_PATHS = ("", "learn", "train", "experiments", "compare", "runs", "board")


# ------------------------------------------------------------------------------------ state

def _url() -> dict[str, str]:
    from core import urlstate
    return urlstate.query_dict(st.query_params)


def read_url() -> None:
    """Take present= and theme= from the link; they win over the session's earlier choice."""
    params = _url()
    if PRESENT_URL_KEY in params:
        st.session_state[PRESENT_KEY] = params[PRESENT_URL_KEY].strip().lower() in ("1", "true", "yes", "on")
    if THEME_URL_KEY in params and params[THEME_URL_KEY].strip().lower() in THEMES:
        st.session_state[THEME_KEY] = params[THEME_URL_KEY].strip().lower()


def enabled() -> bool:
    return bool(st.session_state.get(PRESENT_KEY))


def theme() -> str:
    value = st.session_state.get(THEME_KEY, "system")
    return value if value in THEMES else "system"


def url_params() -> dict[str, str]:
    """What this module keeps in every page's address bar, so a copied link presents the same way."""
    out = {}
    if enabled():
        out[PRESENT_URL_KEY] = "1"
    if theme() != "system":
        out[THEME_URL_KEY] = theme()
    return out


def dark() -> bool:
    """Whether the page is drawn dark now: the explicit choice, else what the browser reports."""
    if theme() != "system":
        return theme() == "dark"
    try:
        return getattr(st.context.theme, "type", None) == "dark"
    except Exception:  # an older Streamlit without st.context.theme: assume light
        return False


def background() -> str:
    """The page's background colour (Streamlit's defaults), for a block that must be opaque."""
    return "#171614" if dark() else "#ffffff"


# ------------------------------------------------------------------------------------ sidebar

def sidebar_controls() -> None:
    """The presentation toggle and the theme choice (inside `with st.sidebar`)."""
    st.session_state[TOGGLE_KEY] = enabled()
    st.toggle("Presentation mode", key=TOGGLE_KEY, on_change=_toggled,
              help="For a projector: large text and charts, one chart per row, tables that wrap, advanced "
                   "controls hidden. Add present=1 to any link to open it this way.")
    st.session_state[THEME_PICK_KEY] = theme()
    st.selectbox("Theme", THEMES, key=THEME_PICK_KEY, format_func=THEME_LABELS.get, on_change=_theme_picked,
                 help="Dark suits a dim room. 'Follow the system' uses the computer's light or dark setting.")


def _toggled() -> None:
    st.session_state[PRESENT_KEY] = bool(st.session_state.get(TOGGLE_KEY))
    _keep_in_url()


def _theme_picked() -> None:
    value = st.session_state.get(THEME_PICK_KEY)
    st.session_state[THEME_KEY] = value if value in THEMES else "system"
    _keep_in_url()


def _keep_in_url() -> None:
    params = _url()
    for key in URL_KEYS:
        params.pop(key, None)
    params.update(url_params())
    st.query_params.from_dict(params)


# ------------------------------------------------------------------------------------ styles

def css(dark_theme: bool) -> str:
    """The presentation style sheet. rem-based: Streamlit sizes text, widgets and spacing in rem,
    so a larger root font scales them together and nothing overlaps."""
    return f"""<style>
html {{ font-size: {BODY_PX}px !important; }}
.stApp, .stMarkdown p, .stMarkdown li, .stCaption, [data-testid="stCaptionContainer"] {{
  font-size: max(1rem, {BODY_PX}px) !important; }}
[data-testid="stSidebar"] .stMarkdown p, [data-testid="stSidebar"] .stCaption {{ font-size: {BODY_PX}px !important; }}
/* every paragraph: alerts, widget labels, metric labels, table cells (Streamlit sets some at 0.875rem) */
[data-testid="stMarkdownContainer"] p, [data-testid="stMarkdownContainer"] li,
[data-testid="stWidgetLabel"] p, [data-testid="stMetricLabel"] p {{ font-size: {BODY_PX}px !important; }}
/* Streamlit's chrome: the coloured strip, the toolbar and the running-man status */
[data-testid="stDecoration"], [data-testid="stToolbar"], [data-testid="stStatusWidget"],
[data-testid="stAppDeployButton"], [data-testid="stMainMenu"] {{ display: none !important; }}
[data-testid="stHeader"] {{ background: transparent !important; }}
.block-container, [data-testid="stMainBlockContainer"] {{ padding-top: 1.5rem !important;
  padding-left: 1.5rem !important; padding-right: 1.5rem !important; max-width: 100% !important; }}
/* One chart per row, at full width: a row of columns holding a chart stacks */
[data-testid="stHorizontalBlock"]:has(.stPlotlyChart) {{ flex-wrap: wrap !important; }}
[data-testid="stHorizontalBlock"]:has(.stPlotlyChart) > [data-testid="stColumn"] {{
  min-width: 100% !important; flex: 1 1 100% !important; }}
/* Tables wrap instead of scrolling sideways */
[data-testid="stTable"], [data-testid="stTableStyledTable"] {{ overflow-x: visible !important; }}
[data-testid="stTable"] table {{ width: 100% !important; table-layout: fixed !important; }}
[data-testid="stTable"] > div {{ overflow-x: visible !important; }}
[data-testid="stTable"] th, [data-testid="stTable"] td {{ white-space: normal !important;
  overflow-wrap: anywhere; word-break: normal; font-size: {BODY_PX}px !important; }}
/* Buttons show their whole label */
.stButton button p, .stDownloadButton button p {{ white-space: normal !important; text-align: left; }}
/* Long code (links) wraps */
code {{ white-space: pre-wrap !important; overflow-wrap: anywhere; }}
/* Plotly's text (the figure's own sizes are set in figure(); this holds when Streamlit re-themes) */
.stPlotlyChart .xtick text, .stPlotlyChart .ytick text {{ font-size: {CHART_TICK_PX}px !important; }}
</style>"""


def _theme_script(choice: str) -> str:
    """Remember the theme where Streamlit's front end looks for it, then reload once to draw it.

    Streamlit keeps the choice of its own Settings menu per page path in localStorage; we write the
    same entry for every page of this app, so moving between pages keeps the theme.
    """
    value = {"light": "Light", "dark": "Dark"}.get(choice, "System")
    paths = json.dumps(list(PAGE_PATHS))
    return f"""<script>
(function() {{
  try {{
    const here = window.location.pathname;
    const last = here.split('/').pop();
    const base = {paths}.includes(last) ? here.slice(0, here.length - last.length) : here.replace(/\\/?$/, '/');
    const value = JSON.stringify({json.dumps(value)});
    let changed = false;
    for (const p of {paths}) {{
      for (const path of [base + p, (base + p).replace(/\\/$/, '') || '/']) {{
        const key = 'stActiveTheme-' + path + '-v2';
        if (window.localStorage.getItem(key) !== value) {{ window.localStorage.setItem(key, value); changed = true; }}
      }}
    }}
    if (changed) {{ window.location.reload(); }}
  }} catch (e) {{ /* private mode without storage: the system theme stays */ }}
}})();
</script>"""


def apply() -> None:
    """Read the link, inject the presentation style, and bring the theme in line with the choice."""
    read_url()
    if enabled():
        st.html(css(dark()))
    choice = theme()
    # Only when the choice differs from what this browser session was last told: the script
    # reloads the page, and must not do so on every rerun.
    if st.session_state.get(APPLIED_THEME_KEY) != choice:
        if choice != "system" or APPLIED_THEME_KEY in st.session_state:
            st.html(_theme_script(choice), unsafe_allow_javascript=True)
        st.session_state[APPLIED_THEME_KEY] = choice


# ------------------------------------------------------------------------------------ charts

def style_figure(fig: go.Figure, on: bool = True) -> go.Figure:
    """Large chart text: every axis's ticks and titles, the title, legend, annotations and bar text."""
    if not on:
        return fig
    fig.update_layout(font=dict(size=CHART_TEXT_PX), legend=dict(font=dict(size=CHART_TEXT_PX)),
                      hoverlabel=dict(font=dict(size=CHART_TEXT_PX)))
    title = fig.layout.title
    if title is not None and title.text:
        fig.update_layout(title=dict(font=dict(size=CHART_TITLE_PX)))
    fig.update_xaxes(tickfont=dict(size=CHART_TICK_PX), title_font=dict(size=CHART_TEXT_PX))
    fig.update_yaxes(tickfont=dict(size=CHART_TICK_PX), title_font=dict(size=CHART_TEXT_PX))
    fig.update_annotations(font_size=CHART_TEXT_PX)
    fig.update_traces(textfont_size=CHART_TEXT_PX, selector=dict(type="bar"))
    fig.update_traces(textfont_size=CHART_TEXT_PX, selector=dict(type="scatter"))
    fig.update_traces(colorbar=dict(tickfont=dict(size=CHART_TICK_PX)), selector=dict(type="heatmap"))
    height = fig.layout.height
    # Bigger letters need more room: a 260 px chart with 18 px ticks keeps too little for the curve.
    fig.update_layout(height=max(int(height * 1.3) if height else CHART_MIN_HEIGHT, CHART_MIN_HEIGHT))
    margin = fig.layout.margin
    if margin is not None and margin.t is not None:
        fig.update_layout(margin=dict(t=max(margin.t, 56)))
    return fig


def figure(fig: go.Figure) -> go.Figure:
    """fig styled for the room when presentation mode is on; unchanged otherwise."""
    return style_figure(fig, enabled())


# ------------------------------------------------------------------------------------ tables

_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$])")


def _cell(value: Any) -> str:
    """One table cell as text st.table shows literally (its cells are markdown: a visitor's review
    must not turn into a link or an image)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return _MARKDOWN.sub(r"\\\1", str(value))


MAX_COLUMNS = 8  # at 20 px, about what 1280 px holds with every cell readable


def table(data, key: str | None = None, where=st, keep: list[str] | None = None, **dataframe_kwargs):
    """st.dataframe normally; in presentation mode a plain table whose cells wrap, so nothing needs
    scrolling sideways (the interactive grid scrolls and cannot wrap), with empty cells as '—'.

    keep: the columns that matter in front of a room, in order; the others are left out (and said
    so) when there are more than MAX_COLUMNS."""
    if not enabled():
        return where.dataframe(data, key=key, **dataframe_kwargs)
    import pandas as pd
    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    if dataframe_kwargs.get("hide_index", False):
        frame = frame.reset_index(drop=True)
    frame = frame.loc[:, [c for c in frame.columns if not frame[c].isna().all()]]
    hidden = []
    if len(frame.columns) > MAX_COLUMNS:
        chosen = [c for c in (keep or []) if c in frame.columns] or list(frame.columns)
        chosen = chosen[:MAX_COLUMNS]
        hidden = [str(c) for c in frame.columns if c not in chosen]
        frame = frame.loc[:, chosen]
    percent = {name for name, cfg in (dataframe_kwargs.get("column_config") or {}).items()
               if isinstance(cfg, dict) and (cfg.get("type_config") or {}).get("format") == "percent"}
    cells = frame.map(_cell)
    for name in percent & set(frame.columns):
        cells[name] = [f"{v:.1%}" if isinstance(v, (int, float)) and not math.isnan(v) else "—" for v in frame[name]]
    shown = where.table(cells)
    if hidden:
        where.caption(f"Presentation mode shows {len(frame.columns)} columns; also recorded: {', '.join(hidden)}.")
    return shown
