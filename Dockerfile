# PEFT Playground as a Hugging Face Docker Space (README front matter: sdk: docker, app_port: 7860).
# Build and run anywhere:  docker build -t peft-playground . && docker run -p 7860:7860 peft-playground
# Step-by-step deployment: docs/SPACE.md.
FROM python:3.11-slim

# torch, installed before the rest by docker/install.sh. PyPI's Linux wheel carries CUDA, so one
# image serves CPU and GPU hardware. For a CPU-only Space set the Space variable (a build argument)
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu: the CPU build, a ~4 GB smaller image.
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX_URL=""

# DL3064 flags TOKENIZERS_PARALLELISM for the word TOKEN: it is a switch, no secret is set here.
# hadolint ignore=DL3064
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PLAYGROUND_CACHE_DIR=/opt/playground-cache \
    PLAYGROUND_ALLOW_LOCAL_MODELS=0 \
    HF_HUB_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false

# Hugging Face Spaces run the container as uid 1000; the app folder is its own (runs/, uploads).
RUN useradd --create-home --uid 1000 --shell /bin/bash user \
    && install -d -o user -g user /home/user/app
WORKDIR /home/user/app

# Dependencies first, so that code changes do not reinstall them.
COPY requirements.txt constraints.txt ./
COPY docker/install.sh docker/
RUN python -m venv /opt/venv && bash docker/install.sh

# SmolLM2: GGUF -> safetensors once, at build time, into a folder every user can read.
COPY core/ core/
RUN python -m core.models --prepare

COPY --chown=user:user . .

USER 1000:1000
ENV HOME=/home/user
# The probe's base-model answers, once, as the app's user (its ~/.cache; core.probe_prepare): a
# class's first hallucination probe then asks only the fine-tuned model.
RUN python -m core.probe_prepare
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=10s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; r = urllib.request.urlopen('http://localhost:7860/_stcore/health', timeout=8); sys.exit(0 if r.read().strip() == b'ok' else 1)"]
ENTRYPOINT ["bash", "/home/user/app/docker/start.sh"]
CMD ["streamlit", "run", "app.py", "--server.port", "7860", "--server.address", "0.0.0.0", "--server.headless", "true"]
