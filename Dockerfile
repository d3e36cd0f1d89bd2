# The hostlife image: lifecycle worker, hypervisor node worker, payment ingress, codec server and mail
# catcher are the same code with another command (see docker-compose.yml).
FROM python:3.11-slim

# libvirt-python builds against libvirt-dev; openssh-client carries qemu+ssh:// URIs to the nodes
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libvirt-dev pkg-config gcc openssh-client \
 && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY policy ./policy
COPY workflows ./workflows
COPY activities ./activities
COPY starter ./starter
COPY worker.py ./
RUN pip install .

# never root: secrets arrive as files under /run/secrets, data under /data
RUN useradd --system --uid 10001 --home-dir /app hostlife \
 && mkdir -p /data && chown hostlife /data
USER hostlife
ENV HOSTLIFE_DATA_DIR=/data

CMD ["python", "worker.py"]
