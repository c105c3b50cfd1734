# The llmco2 sidecar (`llmco2 serve`) as a container: CPU only, non-root (uid 10001).
#   docker build -t llmco2-sidecar:0.1.0 .
#   docker run --rm -p 50551:50551 -p 9464:9464 llmco2-sidecar:0.1.0 serve --host 0.0.0.0 --metrics-port 9464
# In Kubernetes it runs as a native sidecar beside vLLM: deploy/kubernetes/vllm-llmco2.yaml.
#
# What is in it: Python 3.12, the CPU build of torch (the shipped 2-GNN predictor needs it;
# without it the sidecar would fall back to the less accurate Roofline estimate), torch-geometric,
# gRPC, prometheus-client, nvidia-ml-py (NVML is only read with --measure nvml and a visible GPU)
# and this package. Not in it: CUDA, vLLM, the training and profiling extras, torch's C++ test binaries
# and headers. Size: not measured (no Docker daemon where this was written); estimated from the same
# packages installed here (tools/image_size.py): about 0.87 GB of Python packages, torch 0.63 GB of it,
# on top of the python:3.12-slim base.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# extras of this package to add, e.g. --build-arg EXTRAS=otel for `llmco2 serve --otlp` (docs/otel.md)
ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/llmco2
# torch's CPU wheel first: the default index's torch brings the CUDA runtime (several GB)
RUN /opt/llmco2/bin/pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md /src/
COPY llmco2_sidecar /src/llmco2_sidecar
COPY integrations /src/integrations
COPY protos /src/protos
RUN /opt/llmco2/bin/pip install "/src${EXTRAS:+[$EXTRAS]}" \
 && rm -rf /opt/llmco2/lib/python3.12/site-packages/torch/test /opt/llmco2/lib/python3.12/site-packages/torch/include \
 && find /opt/llmco2 -name '*.a' -delete

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 llmco2 \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/llmco2 --no-create-home llmco2 \
 && install -d -o 10001 -g 10001 /var/lib/llmco2 /run/llmco2
COPY --from=build /opt/llmco2 /opt/llmco2
ENV PATH=/opt/llmco2/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LLMCO2_LOG=/var/lib/llmco2/carbon.jsonl
USER 10001:10001
WORKDIR /var/lib/llmco2
EXPOSE 50551 9464
ENTRYPOINT ["llmco2"]
CMD ["serve", "--host", "0.0.0.0", "--metrics-port", "9464"]
