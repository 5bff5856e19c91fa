# Shared by bin/demo and bin/test: make .venv and install the project into it when needed.
# Re-installs only when pyproject.toml changed since the last install.

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

ensure_venv() {
    local extras=$1 stamp
    stamp=".venv/.installed-$extras-$(sha256sum pyproject.toml | cut -c1-16)"
    if [ ! -x .venv/bin/python ]; then
        echo "==> creating .venv with $($PYTHON --version)"
        "$PYTHON" -m venv .venv
    fi
    if [ ! -f "$stamp" ]; then
        echo "==> installing gpudev${extras:+[$extras]} into .venv"
        .venv/bin/python -m pip install --quiet --upgrade pip
        .venv/bin/python -m pip install --quiet -e ".${extras:+[$extras]}"
        touch "$stamp"
    fi
}
