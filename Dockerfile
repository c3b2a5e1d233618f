# One image for the data layer, the mock pods and the Python scheduler example:
#   datalayer serve ... | datalayer mock-pod ... | python3 examples/python_scheduler/scheduler.py ...
# BASE_IMAGE: any image with Python >= 3.11 and its venv module at `python3`.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
# The dependencies first, from pyproject.toml alone: a change to the code reuses this layer.
COPY pyproject.toml ./
RUN python3 -m venv /venv \
 && python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
print("\n".join(p["dependencies"]))' > /tmp/requirements.txt \
 && /venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt
COPY README.md ./
COPY datalayer ./datalayer
COPY server ./server
COPY plugins ./plugins
COPY console ./console
COPY mockpod ./mockpod
RUN /venv/bin/pip install --no-cache-dir --no-deps . && rm -rf build *.egg-info
COPY examples/python_scheduler ./examples/python_scheduler
COPY deploy/compose/healthcheck.py ./healthcheck.py
ENV PATH=/venv/bin:$PATH
EXPOSE 9002 9090 8000
ENTRYPOINT ["datalayer"]
CMD ["serve", "--config", "/etc/datalayer/config.yaml"]
