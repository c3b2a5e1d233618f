# One image for the data layer and the mock pods (`datalayer serve` / `datalayer mock-pod`).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
WORKDIR /app
COPY pyproject.toml README.md ./
COPY datalayer ./datalayer
COPY server ./server
COPY plugins ./plugins
COPY mockpod ./mockpod
RUN python3 -m venv /venv && /venv/bin/pip install --no-cache-dir '.[fast]'
ENV PATH=/venv/bin:$PATH
EXPOSE 9002 9090
ENTRYPOINT ["datalayer"]
CMD ["serve", "--config", "/etc/datalayer/config.yaml"]
