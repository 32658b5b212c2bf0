# The image every raystudy node runs (cluster.yaml's docker.image, k8s/rayjob.yaml's containers):
# Ray 2.60 with CUDA, torch and torchvision as pinned in pyproject.toml, raystudy installed, so
# nodes start without installing anything.
#   docker build -t raystudy:0.1.0-ray2.60.0-py311-gpu .
#   docker tag raystudy:0.1.0-ray2.60.0-py311-gpu <registry>/raystudy:0.1.0-ray2.60.0-py311-gpu
#   docker push <registry>/raystudy:0.1.0-ray2.60.0-py311-gpu
FROM rayproject/ray:2.60.0-py311-gpu

# the CUDA builds of torch from PyPI, at pyproject.toml's pins
RUN pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1

WORKDIR /home/ray/raystudy
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users raystudy raystudy
COPY --chown=ray:users analysis analysis
COPY --chown=ray:users studies studies
# editable: the presets (studies/*.yaml) are found next to the package
RUN pip install --no-cache-dir -e . && python -c "import raystudy, torch; print(raystudy.__file__, torch.__version__)"
