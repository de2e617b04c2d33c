"""The page helpers under their old names, for code outside pages/ (tests, bench): the pages
import from pages.shared.* directly. Importing this module changes nothing in Streamlit."""
from pages.shared.anatomy import (  # noqa: F401
    ANATOMY_CAPTION,
    DORA_NOTE,
    anatomy_figures,
    anatomy_samples,
    anatomy_view,
    uses_dora,
)
from pages.shared.charts import loss_chart, metrics_charts  # noqa: F401
from pages.shared.formatting import (  # noqa: F401
    compute_note,
    error_text,
    fmt_bytes,
    fmt_params,
    fmt_seconds,
    md_escape,
    run_label,
    show_error,
)
from pages.shared.keys import ADMIN_TOKEN_KEY, JOB_KEY  # noqa: F401
from pages.shared.links import lesson_box, query_params, sync_query_params  # noqa: F401
from pages.shared.polling import poll_events  # noqa: F401
from pages.shared.session import (  # noqa: F401
    OWNER_COOKIE,
    device_info,
    is_admin,
    manager,
    owner_id,
    wait_for_warm_up,
    warm_up,
)
