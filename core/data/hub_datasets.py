"""Datasets from the Hugging Face Hub: the local cache first, the network only when core.hub allows."""
from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from core import hub
from core.safety import HUB_ID
from core.data.base import columns_of, DataError, max_rows, Table
from core.data.builtin import BUILTINS


_HUB_CONFIG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_HUB_SPLIT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

_hub_lock = threading.Lock()


@contextmanager
def _hf_offline() -> Iterator[None]:
    """Make datasets read only its local cache, for the duration of one call.

    The flags are process-wide; this only runs when the hub is unreachable anyway, so another
    thread's download cannot be broken by it.
    """
    import datasets.config
    import huggingface_hub.constants as hub_constants
    with _hub_lock:
        saved = (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, hub_constants.HF_HUB_OFFLINE)
        datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
        hub_constants.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE,
             hub_constants.HF_HUB_OFFLINE) = saved


def read_hub(ref: str, split: str, seed: int) -> Table:
    dataset_id, _, config = ref.partition(":")
    dataset_id, config = dataset_id.strip(), config.strip()
    if not HUB_ID.match(dataset_id) or ".." in dataset_id:
        raise DataError(f"hub:{ref} is not a Hugging Face dataset id; write hub:<owner>/<name> such as "
                        "hub:stanfordnlp/sst2 (add :<config> for a dataset with several)")
    if config and not _HUB_CONFIG.match(config):
        raise DataError(f"hub:{ref}: {config!r} is not a dataset config name")
    split = (split or "train").strip()
    if not _HUB_SPLIT.match(split):
        raise DataError(f"data.hub_split={split!r} is not a split name such as train, validation or test "
                        "(slices like train[:100] are not supported: use n_samples)")
    label = f"hub:{ref}"
    offline_msg = (f"dataset {dataset_id} is not available offline; built-in datasets: "
                   f"{', '.join(BUILTINS)}")
    try:
        import datasets
    except ImportError:
        raise DataError("hub datasets need the 'datasets' package, which is not installed") from None
    if not hub.allowed(datasets=True, cached=True):
        with _hf_offline():
            try:
                ds = datasets.load_dataset(dataset_id, config or None, split=split)
            except ValueError as e:
                if "split" in str(e).lower():
                    raise DataError(f"{label} has no split {split!r} in the local cache; set data.hub_split") from None
                raise DataError(offline_msg) from None
            except Exception:  # any cache miss (ConnectionError, FileNotFoundError, ...) means the same
                raise DataError(offline_msg) from None
        return _hub_table(ds, label, seed, streaming=False)
    from datasets.exceptions import DatasetNotFoundError
    try:
        # Streaming reads only the rows used: a hub id can name a terabyte-sized dataset.
        ds = datasets.load_dataset(dataset_id, config or None, split=split, streaming=True)
        return _hub_table(ds, label, seed, streaming=True)
    except DataError:
        raise
    except DatasetNotFoundError:
        raise DataError(f"dataset {dataset_id} was not found on the Hugging Face Hub (or it is private "
                        "or gated); check the id") from None
    except ValueError as e:  # unknown split or a missing/unknown config; datasets lists the choices
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{label} could not be loaded: {first[:400]}") from None
    except (ConnectionError, TimeoutError, OSError):
        raise DataError(f"dataset {dataset_id} could not be downloaded (network problem); built-in "
                        f"datasets: {', '.join(BUILTINS)}") from None
    except Exception as e:  # a stream can fail mid-way in many libraries' own ways; say which dataset
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{label} could not be read: {first[:300]}") from None


def _hub_table(ds: Any, label: str, seed: int, streaming: bool) -> Table:
    from datasets import ClassLabel
    features = getattr(ds, "features", None) or {}
    class_names = {col: list(feat.names) for col, feat in features.items() if isinstance(feat, ClassLabel)}
    limit = max_rows()
    notes = []
    if streaming:
        rows = list(itertools.islice(ds.shuffle(seed=seed, buffer_size=10_000), limit + 1))
        if len(rows) > limit:
            rows = rows[:limit]
            notes.append(f"{label} has more than {limit} rows (PLAYGROUND_MAX_ROWS): read a random {limit}")
    else:
        if len(ds) > limit:
            notes.append(f"{label} has {len(ds)} rows; read a random {limit} (PLAYGROUND_MAX_ROWS)")
            ds = ds.shuffle(seed=seed).select(range(limit))
        rows = [dict(r) for r in ds]
    if not rows:
        raise DataError(f"{label} has no rows in this split")
    columns = list(features) if features else columns_of(rows)
    return Table(label, columns, rows, notes=notes, class_names=class_names)
