# The Edgeplane image for docker-compose.yml (web, worker, beat, gpu-worker).
# Not built in CI: Docker does not run on our machines; tests/test_skeleton.py checks its shape.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    EDGEPLANE_VAR_DIR=/app/var
WORKDIR /app

# torch first, from its own index: the CPU build by default; the gpu profile passes a CUDA one.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0

COPY pyproject.toml README.md manage.py ./
COPY requirements requirements
COPY controlplane controlplane
COPY workers workers
COPY frontend frontend
# EXTRAS: optional extras of pyproject.toml; the gpu profile passes "verl" (verl, Ray's Jobs client).
ARG EXTRAS=""
RUN pip install -c requirements/constraints.txt -e ".${EXTRAS:+[$EXTRAS]}"

RUN useradd --create-home edgeplane && mkdir -p /app/var && chown edgeplane /app/var
USER edgeplane
EXPOSE 8000
# Debug is off (settings); --insecure lets this server still serve /static/ until a production
# server with its own static files replaces it (issue 14).
CMD ["python", "manage.py", "runserver", "--insecure", "0.0.0.0:8000"]
