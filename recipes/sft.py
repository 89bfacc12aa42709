"""Supervised fine-tuning: learn a mixture over task categories of instruction data, or train on one.

    tune run recipes/sft.py --config configs/sft/tiny_stage1.yaml [key=value ...]
    tune run recipes/sft.py --config configs/sft/smollm2_stage1.yaml     # SmolLM2-135M-Instruct

The paper's third scenario (METHOD.md): a pretrained model, instruction data split into task categories
(here the SFT set built by tools/build_sft_data.py: math, summarize, define, docstring, chat), samples
revisited for several epochs. The model starts from ``pretrained_weights`` (the tiny configs': the base
that ``make sft-base`` pretrains on the embedded corpus; ``null`` only on purpose: from scratch, with a
notice). A category may train on a fixed subset of its examples (``train_examples``: the tiny configs
spread the sizes 10:1, as real instruction mixtures do). The domains of the pretraining loop are the
categories; a batch holds whole examples (prompt masked: loss on the response only) drawn by category
according to α (tandem_components/data/sft_loader.py). Stage 1 (``mixture.learner: tandem``, or ``doremi`` / ``doge`` /
``fixed`` baselines) learns α with the twins exactly as in pretraining: the reference's extra data is
the categories' validation split, Δ is measured on a paired probe batch of training examples. Stage 2
(``learner: fixed``) fine-tunes on the learned α.

Evaluation, per category, of the loss and perplexity of the response tokens: during training on the
VAL split (where settings are chosen), at the end on the TEST split, plus a task metric from greedy
decoding of a few test prompts: exact match of the final number for ``math``
(``eval.exact_match_categories``), ROUGE-L F1 against the reference response for the others.

Outputs (in ``output_dir``): those of the pretraining recipe (mixture.yaml, mixture_trajectory.{jsonl,png},
eval.{json,csv} = val loss, eval_test.{json,csv} = test loss, summary.json, model/, logs/) plus
``sft_eval.{json,csv}`` (per category: test loss, metric, training examples, epochs seen, α) and
``generations.jsonl`` (the decoded test prompts).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from tandem_components.atomic import atomic_write_text
from tandem_components.config_validation import SFT_SPLITS as SPLITS, TARGET_KEY, TRAIN_EXAMPLES, validate_sft_config
from tandem_components.data import (
    TARGET_SPLITS, PerCategorySampler, WeightedExampleLoader, chat_format, eval_example_batches, load_category,
    resolve_files, subset_examples, tokenize_category, tokenize_example, tokenizer_sha256,
)
from tandem_components.distributed import broadcast_int, is_main_process, launched_world_size
from tandem_components.errors import TandemError, exit_on_user_error
from tandem_components.mixture import named_or_mapping_weights
from tandem_components.models import load_model_weights
from tandem_components.torchtune_api import config, get_logger
from tandem_components.training import final_number, rouge_l

if __package__:  # the recipe this one extends sits beside it, here and in a copy (`tandem cp`)
    from .pretrain import PretrainRecipe
else:  # a copy run from its own folder: `tune run sft.py ...`, `python sft.py ...`
    from pretrain import PretrainRecipe

log = get_logger("INFO")
#: model components that load pretrained weights themselves (pretrained_weights: null is not "from scratch")
SELF_LOADING_MODELS = ("tandem_components.models.hf_llama",)

@dataclass
class SFTData:
    """What the pretraining recipe calls ``self.corpus``: provenance of the data actually trained on."""

    path: str
    index_sha256: str  # sha256 of every source file's bytes, the field names and the chat format
    tokenizer_sha256: str | None


class SFTRecipe(PretrainRecipe):
    """``PretrainRecipe`` over task categories of prompt/response examples (prompt-masked loss)."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__(cfg)
        # the unit SFT draws is an example: UniMax's N and the natural counts are examples, not tokens
        self.run_tokens = self.max_steps * self.global_batch_size

    # ------------------------------------------------------------------ data
    def _setup_data(self) -> None:
        cfg, data = self.cfg, self.cfg.data
        self.tokenizer = config.instantiate(cfg.tokenizer)
        self.chat_format = chat_format(data.get("chat_format", "tandem"), data.get("system_prompt"))
        self.pad_id = int(self.tokenizer.pad_id)
        self.packing = bool(data.get("packing", False))
        fields = {"prompt_field": data.get("prompt_field", "prompt"),
                  "response_field": data.get("response_field", "response")}
        categories = OmegaConf.to_container(data.categories, resolve=True)
        # α covers the trained categories; a target category (target: true) has val and test only: the
        # learners' validation data and the target score read it, the loader never samples it
        self.targets = [n for n, c in categories.items() if c.get(TARGET_KEY) is True]
        self.domains = [n for n in categories if n not in self.targets]
        self.eval_domains = [*self.domains, *self.targets]
        digest = hashlib.sha256(json.dumps([fields, self.chat_format.name, self.chat_format.system]).encode())
        self.examples: dict[str, list] = {s: [] for s in SPLITS}  # split -> per category (train: trained ones)
        self.raw_test = []  # per evaluated category
        max_len = self.seq_len + 1  # inputs are ids[:-1]
        for name in self.eval_domains:
            sources = categories[name]
            for split in TARGET_SPLITS if name in self.targets else SPLITS:
                examples = load_category(name, split, sources[split], **fields)
                if split == "train":  # val and test stay whole: only what is trained on is subset
                    examples = subset_examples(name, examples, sources.get(TRAIN_EXAMPLES))
                self.examples[split].append(tokenize_category(self.tokenizer, examples, self.chat_format, max_len))
                if split == "test":
                    self.raw_test.append(examples)
                digest.update(json.dumps([name, split, sources[split], sources.get(TRAIN_EXAMPLES)]).encode())
                if not isinstance(sources[split], dict):  # local files: their bytes (an HF source: its name)
                    for path in resolve_files(name, split, sources[split]):
                        digest.update(path.read_bytes())
        path = cfg.tokenizer.get("path")
        self.corpus = SFTData(path=json.dumps(categories), index_sha256=digest.hexdigest(),
                              tokenizer_sha256=tokenizer_sha256(path) if path and Path(path).is_file() else None)
        self.natural_tokens = [len(c) for c in self.examples["train"]]  # "natural" = example proportions
        self.train_tokens = None  # SFT has examples, not token streams
        train = [*(len(a) for a in self.examples["train"]), *("target" for _ in self.targets)]
        log.info("SFT categories (train/val/test examples): " + ", ".join(
            f"{d}={a}/{len(b)}/{len(c)}" for d, a, b, c in
            zip(self.eval_domains, train, self.examples["val"], self.examples["test"])))
        self._setup_target()

    def _similarity(self) -> torch.Tensor:
        raise TandemError("mixture.weights: similarity compares token shards' n-grams; the SFT recipe reads "
                          "examples, not shards: use another mixture here")

    def _build_model(self) -> torch.nn.Module:
        torch.manual_seed(self.seed)
        model = config.instantiate(self.cfg.model)
        weights = self.cfg.get("pretrained_weights")
        if weights:
            model = load_model_weights(model, weights)
        vocab = model.tok_embeddings.num_embeddings
        if vocab < self.tokenizer.vocab_size:
            raise TandemError(f"model.vocab_size: {vocab} is smaller than the tokenizer's {self.tokenizer.vocab_size}")
        return model

    def _setup_models(self) -> None:
        if not self.cfg.get("pretrained_weights") and self.cfg.model._component_ not in SELF_LOADING_MODELS:
            log.warning("pretrained_weights: null: fine-tuning a randomly initialised model from scratch "
                        "(the paper's SFT starts from a pretrained one: make sft-base)")  # once, not per twin
        super()._setup_models()

    def _example_loader(self, split: str, weights, batch_size: int, seed: int) -> WeightedExampleLoader:
        return WeightedExampleLoader(self.examples[split], weights, batch_size, self.seq_len, seed=seed,
                                     rank=self.rank, world_size=self.world_size, pad_id=self.pad_id,
                                     packing=self.packing)

    def _setup_loaders(self) -> None:
        cfg = self.cfg
        self.train_loader = self._example_loader("train", self.mixture.weights, self.batch_size, self.seed)
        self.val_loader = self.probe_sampler = None
        if self.estimator.updates_mixture:  # TANDEM's reference steps and DoGE's validation gradient; Δ's probe
            self.val_loader = self._example_loader(
                "val", self.target_vector, self.per_rank(int(cfg.mixture.get("val_batch_size", self.global_batch_size))),
                self.seed + 1)
            self.probe_sampler = PerCategorySampler(
                self.examples["train"], self.per_rank(self.probe_seqs_per_domain),
                self.seq_len, seed=self.seed + 2, rank=self.rank, world_size=self.world_size, pad_id=self.pad_id,
                domains_per_probe=self.domains_per_probe(), probe_order=self.probe_order(),
            )
        # progress evaluations read val (what a setting may be chosen on); test is read once, at the end
        k = int(cfg.eval.examples_per_category)
        self.eval_batches = eval_example_batches(self.examples["val"], self.seq_len, k, self.pad_id)
        self.test_batches = eval_example_batches(self.examples["test"], self.seq_len, k, self.pad_id)

    def _doremi_reference(self) -> torch.nn.Module:
        """DoReMi's reference, as in pretraining, trained on examples (loaded if given / on resume)."""
        from tandem_components.estimators.doremi import freeze

        mix = self.cfg.mixture
        given = mix.get("reference_checkpoint")
        self.doremi_reference_path = Path(given) if given else self.output_dir / "doremi_reference" / "model.safetensors"
        if given or (self.cfg.get("resume") and self.doremi_reference_path.is_file()):
            return freeze(self.prepare(load_model_weights(self._build_model(), self.doremi_reference_path)))
        reference = self.prepare(self._build_model())
        steps = int(mix.get("reference_steps", self.max_steps))
        weights = named_or_mapping_weights(mix.get("reference_weights", "uniform"), self.domains,
                                           self.natural_tokens, key="mixture.reference_weights",
                                           temperature=mix.get("temperature"), max_epochs=mix.get("max_epochs"))
        optimizer = self._make_optimizer()(reference.parameters())
        scheduler = self._make_lr_scheduler(optimizer, steps)
        loader = iter(self._example_loader("train", weights, self.batch_size, self.seed + 3))
        start = time.perf_counter()
        for _ in tqdm(range(steps), desc="doremi reference", disable=not is_main_process(), dynamic_ncols=True):
            self._train_step(reference, optimizer, scheduler, next(loader).to(self.device))
        self.extra_wall_time_s = time.perf_counter() - start
        self._save_weights(reference, self.doremi_reference_path)
        return freeze(reference)

    # ------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _greedy(self, prompt_ids: list[int], max_new: int) -> list[int]:
        """Greedy decoding without a KV cache (a few short answers per category: simple beats fast).

        Several ranks: every rank decodes the same prompt (under FSDP2 a forward is a collective) and
        takes rank 0's token at every position, so no rank can stop or go on alone: they stay in step."""
        max_ctx = int(self.cfg.model.max_seq_len)
        ids = list(prompt_ids)
        stop = {self.tokenizer.eos_id}
        for _ in range(max_new):
            logits = self.model(torch.tensor([ids[-max_ctx:]], device=self.device))
            nxt = broadcast_int(int(logits[0, -1].argmax()), self.device)
            if nxt in stop:
                break
            ids.append(nxt)
        return ids[len(prompt_ids):]

    def _task_metrics(self) -> None:
        """Per category: exact match of the final number or ROUGE-L F1 of greedy answers to test prompts."""
        ev = self.cfg.eval
        n = int(ev.get("generate_per_category", 0))
        max_new = int(ev.get("max_new_tokens", 64))
        exact = set(ev.get("exact_match_categories") or [])
        self.task_metrics, self.generations = {}, []
        if n == 0:
            return
        was_training = self.model.training
        self.model.eval()
        for name, examples in zip(self.eval_domains, self.raw_test):
            scores = []
            for ex in examples[:n]:
                t = tokenize_example(self.tokenizer, ex, self.chat_format, max_len=self.seq_len + 1)
                prompt_ids = [int(i) for i in t.ids[: t.prompt_len]][-(int(self.cfg.model.max_seq_len) - max_new):]
                out = self.tokenizer.decode(self._greedy(prompt_ids, max_new)).strip()
                if name in exact:
                    want = final_number(ex.response)
                    score = float(want is not None and final_number(out) == want)
                else:
                    score = rouge_l(out, ex.response)
                scores.append(score)
                self.generations.append({"category": name, "prompt": ex.prompt, "reference": ex.response,
                                         "output": out, "score": score})
            self.task_metrics[name] = {"metric": "exact_match" if name in exact else "rouge_l",
                                       "value": sum(scores) / len(scores), "examples": len(scores)}
        self.model.train(was_training)

    def _evaluate_test(self):
        result = super()._evaluate_test()  # loss per category on the test examples' responses
        self._task_metrics()
        if self.metric_logger is not None and self.task_metrics:
            self.metric_logger.log_dict(
                {f"task/{d}/{m['metric']}": m["value"] for d, m in self.task_metrics.items()}, step=self.max_steps)
        return result

    # ---------------------------------------------------------------- outputs
    def _sft_rows(self) -> list[dict]:
        epochs = self.train_loader.epochs_seen().tolist()
        last = self.mixture.last().tolist()
        rows = []
        for i, d in enumerate(self.eval_domains):  # a target last: never trained on, no α
            e = self.final_test.per_domain[d]
            m = self.task_metrics.get(d, {})
            trained = i < len(self.domains)
            rows.append({"category": d, "test_loss": e.loss, "test_ppl": e.perplexity, "metric": m.get("metric", ""),
                         "value": m.get("value", float("nan")),
                         "train_examples": len(self.examples["train"][i]) if trained else 0,
                         "epochs": epochs[i] if trained else 0.0, "alpha": last[i] if trained else 0.0,
                         "role": "source" if trained else "target"})
        return rows

    def _summary(self) -> dict:
        return {**super()._summary(), "sft": self._sft_rows()}

    def _drawn(self) -> dict:
        return {"examples_drawn": self.train_loader.examples_drawn.tolist()}

    def _write_outputs(self) -> None:
        super()._write_outputs()
        out, rows = self.output_dir, self._sft_rows()
        atomic_write_text(out / "sft_eval.json", json.dumps(rows, indent=2) + "\n")
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(out / "sft_eval.csv", buf.getvalue())
        atomic_write_text(out / "generations.jsonl", "".join(json.dumps(g) + "\n" for g in self.generations))
        lines = [f"{'category':<12} {'test loss':>9} {'test ppl':>9} {'metric':>12} {'value':>6} {'train ex':>8} "
                 f"{'epochs':>7} {'alpha':>6}", "-" * 77]
        for r in rows:
            lines.append(f"{r['category']:<12} {r['test_loss']:>9.4f} {r['test_ppl']:>9.2f} {r['metric']:>12} "
                         f"{r['value']:>6.3f} {r['train_examples']:>8} {r['epochs']:>7.2f} {r['alpha']:>6.3f}")
        mean = sum(r["value"] for r in rows) / len(rows)
        lines += ["-" * 77, f"{'MEAN':<12} {self.final_test.mean_loss:>9.4f} {self.final_test.mean_perplexity:>9.2f} "
                  f"{'':>12} {mean:>6.3f}"]
        print("\nSFT per category (test split; metric from greedy decoding):\n" + "\n".join(lines))
        print(f"  table           {out / 'sft_eval.json'}, {out / 'sft_eval.csv'}\n"
              f"  generations     {out / 'generations.jsonl'}")


@exit_on_user_error
@config.parse
def recipe_main(cfg: DictConfig) -> None:
    validate_sft_config(cfg, world_size=launched_world_size())
    recipe = SFTRecipe(cfg)
    recipe.setup()
    recipe.train()
    recipe.cleanup()


if __name__ == "__main__":
    sys.exit(recipe_main())
