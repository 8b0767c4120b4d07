# The Edgeplane image for docker-compose.yml (migrate, web, workers, beat, gpu-worker).
# Not built in CI: Docker does not run on our machines; tests/test_deploy_files.py checks its shape
# and tests/test_production_stack.py runs its commands (collectstatic, gunicorn) outside Docker.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    EDGEPLANE_VAR_DIR=/app/var EDGEPLANE_STATIC_ROOT=/app/static \
    DJANGO_SETTINGS_MODULE=controlplane.settings_production
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

# Static files, once, into the image (hashed names, gzip twins: WhiteNoise serves them). Outside
# /app/var, which the var volume covers at run time. The secret and hosts are placeholders that
# collectstatic never uses; the var folder is a throwaway one.
RUN SECRET_KEY=collectstatic-only DJANGO_ALLOWED_HOSTS=localhost EDGEPLANE_VAR_DIR=/tmp/build-var \
    python manage.py collectstatic --noinput && rm -rf /tmp/build-var

RUN useradd --create-home edgeplane && mkdir -p /app/var && chown edgeplane /app/var
USER edgeplane
EXPOSE 8000
# The production server (docker-compose.yml's web runs the same command).
CMD ["gunicorn", "-c", "controlplane/gunicorn.conf.py", "controlplane.wsgi"]
