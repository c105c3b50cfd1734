# vLLM's own image with the llmco2 plugin added (the `llmco2_vllm` entry point; it does nothing until
# LLMCO2_SIDECAR is set). Installs no vLLM and no torch: both come from the base image.
#   docker build -f deploy/vllm-plugin.Dockerfile -t llmco2-vllm:0.32.0 .
# The plugin detects what it reads in vLLM's scheduler (tested on 0.27-0.32); a vLLM lacking one runs
# unhooked with one log line naming it. `llmco2 doctor` inside the image says which.
ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0
FROM ${VLLM_IMAGE}
COPY pyproject.toml README.md /tmp/llmco2/
COPY llmco2_sidecar /tmp/llmco2/llmco2_sidecar
COPY integrations /tmp/llmco2/integrations
COPY protos /tmp/llmco2/protos
RUN python3 -m pip install --no-cache-dir /tmp/llmco2 && rm -rf /tmp/llmco2
