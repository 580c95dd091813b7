"""TorchServe model archives: build a ``.mar`` of a model folder, or copy one with serve-time overrides.

:func:`build_archive` packs the handler entry file (``handlers/qa_handler.py``, installed as
``qa_serving.handlers``), a zip of this package (so the server needs no checkout and runs exactly the code
it was archived with), the model folder and a model-config.yaml built from :mod:`.settings` into
``<store>/<name>.mar`` with ``torch-model-archiver``.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from qa_serving.errors import QAError
from qa_serving.serving.settings import apply_overrides, model_config

DEFAULT_STORE = Path("model_store")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-.]*$")
# Packages zipped into the archive as qa_serving/...: the handler imports only the library, but the
# mapped subpackages live outside qa_serving/ in a checkout, so each is added from where it is installed.
_BUNDLED = ("qa_serving", "qa_serving.export")


def handler_file() -> Path:
    """Path of the TorchServe entry file ``qa_handler.py`` (installed wheel or editable checkout)."""
    return Path(str(importlib.resources.files("qa_serving.handlers") / "qa_handler.py"))


def zip_package(dest: Path) -> Path:
    """Zip this package's sources into ``dest`` (importable from sys.path: ``dest/qa_serving/...``)."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for package in _BUNDLED:
            root = Path(str(importlib.resources.files(package)))
            prefix = Path(*package.split("."))
            for path in sorted(root.rglob("*.py")):
                rel = path.relative_to(root)
                if "__pycache__" in rel.parts or (package == "qa_serving" and rel.parts[0] == "export"):
                    continue
                zf.write(path, prefix / rel)
    return dest


def read_template(path: str | Path | None) -> dict | None:
    """A user's model-config.yaml template, or None for the built-in defaults."""
    if path is None:
        return None
    import yaml

    path = Path(path)
    if not path.is_file():
        raise QAError(f"model-config template {path} not found")
    try:
        template = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise QAError(f"model-config template {path} is not valid YAML: {err}") from None
    if not isinstance(template, dict):
        raise QAError(f"model-config template {path} must be a YAML mapping (key: value), got {type(template).__name__}")
    return template


def build_archive(
    *,
    model_dir: str | Path,
    name: str = "qa",
    store: str | Path = DEFAULT_STORE,
    onnx_dir: str | Path | None = None,
    template: str | Path | None = None,
    version: str = "1.0",
    **settings: Any,
) -> Path:
    """Build ``<store>/<name>.mar`` for TorchServe and return its path (an existing one is replaced).

    ``model_dir`` is a saved span model with its tokenizer and qa_config.json (an exported ONNX folder
    when ``backend="onnx"``); ``onnx_dir`` adds an ONNX export beside a PyTorch model so that
    ``QA_BACKEND=onnx`` can switch at serve time. ``settings`` are rows of
    :data:`~qa_serving.serving.settings.SETTINGS` (batch_size, workers, backend, threads, ...); unset ones
    keep the template's value or the table's default. Example:
    ``build_archive(model_dir="outputs/squad-small", name="squad", batch_size=16)`` -> ``model_store/squad.mar``.
    """
    from qa_serving.core.backends import is_onnx_dir

    model_dir, store = Path(model_dir), Path(store)
    if not _NAME.match(name):
        raise QAError(f"archive name {name!r} must start with a letter and use only letters, digits, _ - .")
    if not model_dir.is_dir():
        raise QAError(f"model folder {model_dir} not found")
    if not any((model_dir / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise QAError(f"{model_dir} holds no tokenizer; save it beside the model (tokenizer.save_pretrained)")
    if not (model_dir / "config.json").is_file():
        raise QAError(f"{model_dir} has no config.json: not a saved model folder (the archive could not load)")
    config = model_config(read_template(template), **settings)
    backend = config["handler"].get("backend", "torch")
    if backend == "onnx" and not (is_onnx_dir(model_dir) or (onnx_dir and is_onnx_dir(onnx_dir))):
        raise QAError(
            f"backend 'onnx' needs an exported model: {model_dir} holds no .onnx file "
            "(run `qa-serving export` or pass --onnx DIR)"
        )
    if onnx_dir is not None and not is_onnx_dir(onnx_dir):
        raise QAError(f"{onnx_dir} holds no .onnx model")
    import yaml

    store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qa-archive-") as tmp:
        stage = Path(tmp)
        extra = stage / "extra"
        _copy_model(model_dir, extra / "model")
        if onnx_dir is not None:
            _copy_model(Path(onnx_dir), extra / "onnx")
        zip_package(extra / "qa_serving.zip")
        yaml_path = stage / "model-config.yaml"
        yaml_path.write_text(yaml.safe_dump(config, sort_keys=False))
        cmd = [
            sys.executable, "-m", "model_archiver.model_packaging",
            "--model-name", name, "--version", version,
            "--handler", str(handler_file()),
            "--extra-files", str(extra),
            "--config-file", str(yaml_path),
            "--export-path", str(store),
            "--force",
        ]  # fmt: skip
        # torch-model-archiver stages files in $TMPDIR/<name>: a private TMPDIR keeps parallel builds apart.
        (stage / "tmp").mkdir()
        env = {**os.environ, "TMPDIR": str(stage / "tmp")}
        result = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise QAError(
                f"torch-model-archiver failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
            )
    return store / f"{name}.mar"


def _copy_model(src: Path, dest: Path) -> None:
    """The files of a model folder (not its subfolders: training checkpoints stay out of the archive)."""
    dest.mkdir(parents=True)
    for path in src.iterdir():
        if path.is_file() and not path.name.startswith("."):
            shutil.copy2(path, dest / path.name)


def override_archive(src: str | Path, dest: str | Path, **overrides: Any) -> Path:
    """Copy the archive ``src`` to ``dest`` with :func:`~.settings.apply_overrides` applied to its
    model-config.yaml (TorchServe reads its top-level keys at load and they win over config.properties).

    The copy is stored uncompressed (no recompression of the weights); the source stays untouched.
    """
    import yaml

    src, dest = Path(src), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(src) as zin:
        manifest = json.loads(zin.read("MAR-INF/MANIFEST.json"))
        name = manifest.get("model", {}).get("configFile")
        if not name or name not in zin.namelist():
            raise QAError(f"{src} has no model-config.yaml to override; rebuild it with `qa-serving archive`")
        config = apply_overrides(yaml.safe_load(zin.read(name)) or {}, **overrides)
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED, allowZip64=True) as zout:
            for info in zin.infolist():
                if info.filename == name:
                    zout.writestr(name, yaml.safe_dump(config, sort_keys=False))
                elif info.is_dir():
                    zout.writestr(info, b"")
                else:
                    with zin.open(info) as fin, zout.open(info.filename, "w", force_zip64=True) as fout:
                        shutil.copyfileobj(fin, fout, 1 << 20)
    return dest
