"""The class around the queue: the owner cookie, the nickname, each person's place, the admin box.

app.py calls sidebar_class() on every page; the Train page and the sidebar word a waiting run's
place with wait_text(). Every nickname is visitor text: shown only through md_escape.
"""
from __future__ import annotations

import json
from urllib.parse import quote, unquote

import streamlit as st

from core import queue_rules, runs
from pages.shared.formatting import fmt_seconds, md_escape, show_error
from pages.shared.keys import ADMIN_TOKEN_KEY
from pages.shared.session import OWNER_COOKIE, is_admin, manager, owner_id

NICK_KEY = "_playground_nickname"  # the sidebar text_input's widget key
NICK_COOKIE = "peft_playground_nickname"
_WRITTEN_KEY = "_playground_cookies_written"
COOKIE_MAX_AGE_S = 365 * 24 * 3600
SOON_S = 10.0  # below this a start is "any moment": the estimate is not that precise
QUEUE_SHOWN = 8


def _cookies() -> dict:
    try:
        return dict(st.context.cookies)
    except Exception:  # no request context (AppTest)
        return {}


def remember_owner(nickname: str) -> None:
    """Write the owner token and nickname into the browser's cookies when the browser lacks them.

    Cookies, not the URL: a link gets shared (a follow-a-run link, a lesson link), and the owner token
    in it would hand over Stop and Delete. Over https the cookie is SameSite=None; Secure; Partitioned
    so that it also works when the app is framed (a Hugging Face Space); over http, SameSite=Lax."""
    owner = owner_id()
    wanted = {OWNER_COOKIE: owner, NICK_COOKIE: quote(nickname, safe="")}
    sent = _cookies()
    if all(sent.get(k) == v for k, v in wanted.items()) or st.session_state.get(_WRITTEN_KEY) == wanted:
        return
    st.session_state[_WRITTEN_KEY] = wanted
    # json.dumps makes JS string literals; "<" escaped so no value can close the script tag.
    values = json.dumps(wanted).replace("<", "\\u003c")
    st.html(f"""<script>
(function () {{
  var values = {values};
  var attrs = "; path=/; max-age={COOKIE_MAX_AGE_S}" +
    (location.protocol === "https:" ? "; SameSite=None; Secure; Partitioned" : "; SameSite=Lax");
  for (var name in values) {{ document.cookie = name + "=" + values[name] + attrs; }}
}})();
</script>""", unsafe_allow_javascript=True)


def nickname_box() -> str:
    """The nickname field (remembered in a cookie); returns the cleaned nickname."""
    if NICK_KEY not in st.session_state:
        st.session_state[NICK_KEY] = queue_rules.clean_nickname(unquote(_cookies().get(NICK_COOKIE) or ""))
    st.text_input("Your name, shown beside your runs", key=NICK_KEY, max_chars=queue_rules.NICKNAME_MAX,
                  placeholder="e.g. Ada", help="Only for display, so the class can tell whose run is whose. "
                  "Your runs stay yours after a reload through a cookie in this browser.")
    return queue_rules.clean_nickname(st.session_state.get(NICK_KEY) or "")


def wait_text(snap: dict) -> str:
    """When a waiting run starts, in honest words: a measured estimate, 'any moment', or 'not known yet'."""
    if snap.get("paused"):
        return "queue paused"
    est = snap.get("est_start_s")
    if est is None:
        return "start time not known yet"  # no run like it has finished here: no measurement to go on
    if est < SOON_S:
        return "starts any moment"
    return f"starts in ~{fmt_seconds(est)}"


def queue_line(snap: dict, mine: bool = False) -> str:
    """One sidebar line: place, name, who, when (markdown, visitor text escaped)."""
    who = f" · {md_escape(snap['nickname'])}" if snap.get("nickname") else ""
    you = " **(yours)**" if mine else ""
    bumped = " ⬆" if snap.get("bumped") else ""
    return f"{snap.get('position')}. {md_escape(snap.get('name'))}{who}{you}{bumped} · {wait_text(snap)}"


def queue_lines(queue: list[dict]) -> None:
    """The waiting runs in the order they will start; this person's own place even when far down."""
    me = runs.owner_tag(owner_id())
    st.markdown(f"**Queue** ({len(queue)})" + (" · paused" if queue and queue[0].get("paused") else ""))
    for snap in queue[:QUEUE_SHOWN]:
        st.caption(queue_line(snap, snap.get("owner") == me))
    mine_below = [s for s in queue[QUEUE_SHOWN:] if s.get("owner") == me]
    if len(queue) > QUEUE_SHOWN:
        st.caption(f"… and {len(queue) - QUEUE_SHOWN} more")
    for snap in mine_below[:3]:
        st.caption(queue_line(snap, True))


def _admin_controls() -> None:
    mgr = manager()
    paused = mgr.paused
    if st.button("Resume the queue" if paused else "Pause the queue", key="adm_pause",
                 help="Paused: running runs go on, no new run starts"):
        try:
            mgr.resume(admin=True) if paused else mgr.pause(admin=True)
        except Exception as exc:
            show_error(exc)
        st.rerun()
    waiting = mgr.running() + mgr.queue()
    if not waiting:
        st.caption("Nothing is training or waiting.")
        return
    labels = {s["id"]: (f"{s['position']}. " if s.get("position") else "training: ") + str(s["name"])
              + (f" · {s['nickname']}" if s.get("nickname") else "") for s in waiting}
    # A selectbox shows its options as plain text: nothing to escape there.
    pick = st.selectbox("Run", list(labels), format_func=labels.get, key="adm_pick")
    c1, c2 = st.columns(2)
    state = next(s["state"] for s in waiting if s["id"] == pick)
    if c1.button("To the front", key="adm_bump", disabled=state != "queued"):
        try:
            mgr.bump(pick, admin=True)
        except Exception as exc:
            show_error(exc)
        st.rerun()
    if c2.button("Cancel" if state == "queued" else "Stop", key="adm_cancel"):
        try:
            mgr.cancel(pick, owner_id(), admin=True)
        except Exception as exc:
            show_error(exc)
        st.rerun()


def admin_box() -> None:
    with st.expander("Admin"):
        if not queue_rules.admin_configured():
            st.caption("No admin token is set on this server, so nobody can manage the queue or stop "
                       "other people's runs. The host sets one by starting the app with "
                       "`PLAYGROUND_ADMIN_TOKEN=` set to a long random secret (README: Hosting a class).")
            return
        st.text_input("Admin token", type="password", key=ADMIN_TOKEN_KEY,
                      help="Lets a teacher manage the queue and stop or download any session's runs")
        if is_admin():
            _admin_controls()
        elif st.session_state.get(ADMIN_TOKEN_KEY):
            st.caption("That is not the admin token.")


def sidebar_class() -> None:
    """Nickname box, cookie writer, heartbeat with the nickname: call once per rerun, in the sidebar."""
    nickname = nickname_box()
    try:
        manager().heartbeat(owner_id(), nickname=nickname)
    except Exception as exc:
        show_error(exc)
    remember_owner(nickname)
