"""Session-state keys that more than one page (or app.py) reads or writes, in one place.

A key a single page owns stays in that page or its part module; widget keys stay where the widget is.
"""
OWNER_KEY = "_playground_owner_id"          # this browser's owner token (pages.shared.session.owner_id)
ADMIN_TOKEN_KEY = "_playground_admin_token"  # the sidebar text_input's widget key
JOB_KEY = "_train_job"            # id of the latest run this session submitted: the Train page follows it live
TRAIN_EVENTS_KEY = "_train_events"  # {"id": run id, "events": [...]}: Train fetches only what is new
TRAIN_DRAFT_KEY = "_train_draft"    # the RunConfig dict being edited on Train; Experiments may start from it
TRAIN_URL_KEY = "_train_url"        # {"loaded", "lesson", "base"}: what Train read the URL against
EXPERIMENTS_URL_KEY = "_exp_url"    # cleared by a Learn lesson card, like TRAIN_URL_KEY
COMPARE_RUN_KEY = "compare_run"     # the run Compare should show (set by Train and Runs)
GPU_PARTS_SKIPPED_KEY = "_gpu_parts_skipped"  # a page left out a GPU hint while torch loaded: app.py redraws on a GPU
