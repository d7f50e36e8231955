# domicile's HTTP service on the embedded default: three SQLite sites, their keys and the demo
# client live in the volume /data (made on the first start, kept across restarts).
#   docker build -t domicile .
#   docker run -p 8700:8700 -v domicile-data:/data domicile
# With a deployment of your own, put its domicile.yaml (and what it names) in the volume:
# `domicile serve` uses /data/domicile.yaml when it exists.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: the wheel, from the sources only (see .dockerignore) --------------------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN pip install --no-cache-dir "build>=1.2,<2"
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN python -m build --wheel --outdir /dist .

# -- runtime: the wheel in its own virtual environment, run by an unprivileged user -------
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/domicile/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /dist/ /tmp/dist/
RUN python -m venv /opt/domicile \
    && wheel="$(echo /tmp/dist/*.whl)" \
    && /opt/domicile/bin/pip install --no-cache-dir "${wheel}[console]" \
    && rm -rf /tmp/dist \
    && groupadd --system --gid 10001 domicile \
    && useradd --system --uid 10001 --gid domicile --home-dir /data --no-log-init domicile \
    && mkdir -p /data \
    && chown domicile:domicile /data \
    && chmod 0700 /data
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8700
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8700/healthz', timeout=4)"]
ENTRYPOINT ["domicile", "serve", "--host", "0.0.0.0", "--port", "8700"]
CMD []
