# Operator image: kopf + the API models. No torch: the operator only renders
# Jobs; training runs in trainer_image/Dockerfile.
# Build: docker build -t ghcr.io/trustdoc/sft-operator:0.1.0 .
FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY trainer_image/sft_trainer ./trainer_image/sft_trainer
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir '.[operator]'

FROM python:3.11.14-slim-bookworm
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A fixed numeric user so `runAsNonRoot` can be verified by the kubelet.
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin sft
USER 10001
EXPOSE 8080
# `sftctl operator` (kopf run -m sft_operator.main with the operator's settings), as every test starts it.
ENTRYPOINT ["sftctl", "operator"]
