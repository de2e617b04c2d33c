"""Datasets -> plain rows: built-in demos, uploaded or local files, and Hugging Face Hub datasets.

Classification rows come out as {"text": str, "label": int} (an index into `label_names`); SFT rows
as {"prompt": str, "response": str} plus any other plain fields of the source (e.g. fact_id,
keywords). Tokenisation happens elsewhere (core.tokenize).

Every user-caused problem raises DataError, whose message names the file, column or value and says
what to do, so the UI can show it as is. Files are parsed with csv/json/pyarrow only: never pickle,
eval or anything that runs code from the data.

Modules, lowest first: base (errors, limits, result types), sniff (format checks), files (uploads
on disk), parsers, rows (columns -> rows, split), builtin (lesson data), hub_datasets, load
(load_rows, preview). Callers import from core.data; the names below are its public face.
"""
from core.data.base import (  # noqa: F401
    DataError, default_uploads_dir, FORMATS, LoadedData, local_files_allowed, MAX_LABELS,
    max_line_bytes, max_rows, max_upload_bytes,
)
from core.data.files import (  # noqa: F401
    display_name, NAME_SUFFIX, save_upload, shown_name,
)
from core.data.builtin import (  # noqa: F401
    BUILTIN_DIR, builtin_general_questions, builtin_heldout, builtin_task, list_builtin,
    read_jsonl, REHEARSAL_ID, without_rehearsal,
)
from core.data.load import (  # noqa: F401
    check_table, example_inputs, FACTS_SOURCES, load_rows, preview,
)
