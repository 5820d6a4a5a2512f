# infopt on a CUDA PyTorch base image, serving JupyterLab on port 8888.
#   docker build -t infopt .
#   docker run --gpus all -p 8888:8888 -e JUPYTER_TOKEN=<choose-a-secret> infopt
# The base's torch is the one the lab was developed against (2.14.1, CUDA 13.0; torchao>=0.18 needs a recent
# torch): pip is constrained to keep it, so a pin that would need another torch fails the build instead of
# silently replacing the base's CUDA build. Another base: docker build --build-arg BASE=pytorch/pytorch:<tag> .
ARG BASE=pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime
FROM ${BASE}

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

RUN useradd --create-home --uid 1000 lab
WORKDIR /home/lab/infopt
COPY --chown=lab:lab . .
# gpu: nvidia-ml-py (NVML checks) and onnxruntime-gpu (CUDA execution provider), never the CPU onnxruntime
# build beside it; test: pytest without dev's CPU-only extras; ray: --executor ray.
RUN python -c "import torch; print(f'torch=={torch.__version__}')" > /tmp/torch-constraint.txt \
    && pip install -c /tmp/torch-constraint.txt -e ".[gpu,test,ray]" \
    && python -c "import importlib.metadata as m; assert 'onnxruntime' not in {d.metadata['Name'] for d in m.distributions()}, 'CPU onnxruntime installed beside onnxruntime-gpu'" \
    && python -c "import torch, torchao, onnxruntime, pynvml; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'torchao', torchao.__version__, 'onnxruntime', onnxruntime.__version__)"

USER lab
EXPOSE 8888
# Token authentication stays on: JupyterLab reads JUPYTER_TOKEN, or generates a
# random token and prints the login URL when it is unset. Never pass an empty token.
CMD ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser", "--ServerApp.root_dir=/home/lab/infopt"]
