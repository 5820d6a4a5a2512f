# infopt on a CUDA PyTorch base image, serving JupyterLab on port 8888.
#   docker build -t infopt .
#   docker run --gpus all -p 8888:8888 -e JUPYTER_TOKEN=<choose-a-secret> infopt
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

RUN useradd --create-home --uid 1000 lab
WORKDIR /home/lab/infopt
COPY --chown=lab:lab . .
RUN pip install -e ".[dev]"

USER lab
EXPOSE 8888
# Token authentication stays on: JupyterLab reads JUPYTER_TOKEN, or generates a
# random token and prints the login URL when it is unset. Never pass an empty token.
CMD ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser", "--ServerApp.root_dir=/home/lab/infopt"]
