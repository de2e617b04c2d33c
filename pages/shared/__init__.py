"""Parts the pages share: session keys, ownership, formatting, charts, the job panel, widgets.

Not a page: Streamlit lists only what app.py hands to st.navigation, and its old pages/ scan
(pages/shared/legacy.py) reads pages/*.py, never a subfolder.
"""
# pandas in full before any chart: plotly peeks at sys.modules["pandas"] while drawing, and a
# first import of pandas by another session's thread at that moment (the Runs page, 30 first
# visits at once) hands it a half-initialised module: "pandas has no attribute 'Series'".
import pandas  # noqa: F401
