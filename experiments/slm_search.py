"""The searched hybrid against latency-matched single-operator language models.

For each decode-latency budget on ``local-cpu``:

- ``hybrid``: ``nas search --space slm`` (aging evolution started from the
  search's seed layouts, ``nas.slm.search.SEED_LAYOUTS``, then random ones;
  every candidate at the widest width predicted to meet the budget, trained
  on the same token budget; the finalists moved along the width ladder by
  their measured latency and retrained there; the lowest-loss one so sized);
- ``attention`` / ``mamba2`` / ``deltanet``: the hybrid's layer structure
  (depth, FFN placement) with every mixer replaced by one operator, sized the
  same way (the widest width whose measured latency meets the budget),
  trained on the same token budget.

Reported per model: measured ms/token (decode after CONTEXT tokens, batch 1),
validation and test bits per byte, associative-recall accuracy, wall time.
Target: the hybrid has the lowest test bits per byte at every budget, with
its measured latency within the budget.

One training run's loss depends on its seed (initial weights and batch
order) by up to about 0.1 bits per byte at these sizes, as much as the gaps
between the models compared; ``--seeds N`` trains every reported model
(searched hybrid and baselines, each at its measured width) with N seeds
and compares the mean test bits per byte. The search itself ranks
candidates by one seed, as ``nas search`` does. ``--final-tokens N``
trains the reported models on N tokens after the search (every model
alike), as the paper trains its finalists fully after ranking candidates
by a short proxy run.

    .venv/bin/python experiments/slm_search.py [--budgets 1.5 3] [--candidates 10] [--tokens N]

Training (language model and recall) runs at niceness ``--train-nice``
(default 19) on one thread; the device measurements run at the priority
the script was started with.

Results: ``experiments/results/slm_search.md`` (rewritten after each model).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_file import machine_line, write_keeping_reading  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "slm_search.md"
SINGLE = {"attention": "A", "mamba2": "M2", "deltanet": "D"}


def single_operator_layout(arch: str, mixer: str) -> str:
    """``arch``'s stages with every mixer replaced by ``mixer`` (FFNs kept, width dropped)."""
    layout = arch.rpartition("@")[0]
    stages = []
    for stage in layout.split("|"):
        tokens = stage.split()
        stages.append(" ".join(t if t in ("F", "-") else mixer for t in tokens))
    return " | ".join(stages)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[1.5, 3.0], help="ms/token")
    parser.add_argument("--candidates", type=int, default=10, help="layouts the hybrid search trains")
    parser.add_argument("--population", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=None, help="training tokens per model (default: the search's)")
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "nas-slm-search"),
                        help="work folder: trained candidates, measurement store, result rows of every budget "
                             "(budgets may run in parallel processes sharing it; the table shows them all)")
    parser.add_argument("--recall-steps", type=int, default=None, help="recall training steps (default: the task's)")
    parser.add_argument("--train-nice", type=int, default=19, help="niceness of the training runs (default 19)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="training seeds per reported model; the table compares their mean test bpb")
    parser.add_argument("--final-tokens", type=int, default=None,
                        help="train every reported model (hybrid and baselines, every seed) on this many tokens "
                             "after the search, which ranks candidates by its short proxy run (default: the "
                             "proxy's tokens, the search's own models)")
    parser.add_argument("--results", default=str(RESULTS), help=f"results file (default {RESULTS.name} in results/)")
    parser.add_argument("--retrain-only", action="store_true",
                        help="keep every row of an earlier run in --work (architectures and measured widths) and "
                             "only train its models again: with --final-tokens and --seeds")
    parser.add_argument("--baselines-only", action="store_true",
                        help="keep each budget's hybrid row from an earlier run and (re)run only the baselines")
    args = parser.parse_args()

    import torch

    from nas.slm import search as slm_search
    from nas.slm.recall import RecallTask
    from nas.slm.search import SlmSearchConfig, search_slm
    from nas.slm.training import TrainingConfig

    torch.set_num_threads(args.threads)
    # training yields the CPU to others; the measurements between training runs keep the starting priority
    slm_search.train_language_model = _at_niceness(slm_search.train_language_model, args.train_nice)
    slm_search.recall_accuracy = _at_niceness(slm_search.recall_accuracy, args.train_nice)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    store = str(work / "measurements.db")
    training = TrainingConfig(tokens=args.tokens) if args.tokens else TrainingConfig()
    config = SlmSearchConfig(num_candidates=args.candidates, population_size=args.population,
                             tournament_size=min(2, args.population), finalists=2, context=args.context,
                             training=training,
                             recall=RecallTask(train_steps=args.recall_steps) if args.recall_steps else RecallTask())
    for budget in args.budgets:
        rows_file = work / f"rows-{budget:g}ms.jsonl"
        if args.retrain_only:
            rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
            rows_file.write_text("")
            for row in rows:
                if "error" not in row:
                    row = _with_seeds(row, config, args.seeds, args.train_nice, args.final_tokens)
                _keep(rows_file, row)
                _write(work, args, config)
            continue
        if args.baselines_only:
            kept = [line for line in rows_file.read_text().splitlines() if '"hybrid' in line]
            rows_file.write_text("".join(line + "\n" for line in kept))
            hybrid_arch = json.loads(kept[0])["arch"]
        else:
            rows_file.unlink(missing_ok=True)
            t0 = time.perf_counter()
            hybrid = search_slm("local-cpu", budget, config=config, work_dir=work / f"hybrid-{budget:g}",
                                store=store, resume=True)
            _keep(rows_file, _with_seeds(_row(budget, "hybrid (searched)", hybrid, time.perf_counter() - t0),
                                         config, args.seeds, args.train_nice, args.final_tokens))
            _write(work, args, config)
            hybrid_arch = hybrid.arch
        if hybrid_arch is None:
            continue
        for name, mixer in SINGLE.items():
            t0 = time.perf_counter()
            layout = single_operator_layout(hybrid_arch, mixer)
            try:
                outcome = search_slm("local-cpu", budget, config=dataclasses.replace(config, finalists=1),
                                     layouts=[layout], work_dir=work / f"{name}-{budget:g}", store=store,
                                     resume=True)
            except Exception as error:  # e.g. no width of this operator meets the budget
                _keep(rows_file, {"budget_ms": budget, "model": name, "arch": layout, "error": str(error),
                                  "wall_s": time.perf_counter() - t0})
            else:
                _keep(rows_file, _with_seeds(_row(budget, name, outcome, time.perf_counter() - t0), config,
                                             args.seeds, args.train_nice, args.final_tokens))
            _write(work, args, config)
    return 0


def _at_niceness(function, niceness: int):
    """``function`` run with this thread's niceness set to ``niceness``, restored afterwards."""
    def run(*args, **kwargs):
        before = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, max(before, niceness))
        try:
            return function(*args, **kwargs)
        finally:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, before)
            except PermissionError:  # lowering niceness again needs privileges; stay low
                pass
    return run


def _row(budget: float, name: str, outcome, wall_s: float) -> dict:
    row = {"budget_ms": budget, "model": name, "arch": outcome.arch, "measured_ms": outcome.measured_ms,
           "val_bpb": outcome.val_bpb, "test_bpb": outcome.test_bpb, "recall": outcome.recall_accuracy,
           "wall_s": wall_s, "trained": sum(c.val_bpb is not None for c in outcome.candidates),
           "device_measurements": len(outcome.device_measurements),
           "finalists": [{k: f.get(k) for k in ("arch", "trained_width", "measured_ms", "spread_ms", "val_bpb",
                                                 "meets_budget", "recall_accuracy")} for f in outcome.finalists],
           "candidates": [{"arch": c.arch or c.layout, "predicted_ms": c.predicted_ms, "val_bpb": c.val_bpb}
                          for c in outcome.candidates if c.val_bpb is not None],
           "seed_layouts": list(outcome.seed_layouts)}
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def _with_seeds(row: dict, config, seeds: int, train_nice: int, final_tokens: int | None = None) -> dict:
    """``row`` with its model retrained at the same width under seeds 1..``seeds``-1 (seed 0 is the run the
    search or baseline already made; with ``final_tokens`` every seed is trained anew on that many tokens):
    per-seed validation and test bits per byte, and their means."""
    if row.get("arch") is None or row.get("test_bpb") is None:
        return row
    import numpy as np
    import torch

    from nas.slm.corpus import load_corpus
    from nas.slm.search import build
    from nas.slm.training import bits_per_byte, train_language_model

    corpus = load_corpus()
    longer = final_tokens is not None and final_tokens != config.training.tokens
    per_seed = [] if longer else [{"seed": config.training.seed, "val_bpb": row["val_bpb"],
                                   "test_bpb": row["test_bpb"]}]
    t0 = time.perf_counter()
    for seed in range(0 if longer else 1, seeds):
        training = dataclasses.replace(config.training, seed=config.training.seed + seed,
                                       tokens=final_tokens if longer else config.training.tokens)
        torch.manual_seed(training.seed)
        model = build(row["arch"])
        run = _at_niceness(train_language_model, train_nice)(model, corpus.train, corpus.validation, training)
        test = bits_per_byte(model, corpus.test, context=training.context, max_bytes=config.test_bytes)
        per_seed.append({"seed": training.seed, "val_bpb": run.val_bpb, "test_bpb": test})
        print(f"{row['model']} {row['arch']} seed {training.seed}: val {run.val_bpb:.3f}, test {test:.3f} bpb",
              file=sys.stderr, flush=True)
    tests = np.array([s["test_bpb"] for s in per_seed])
    return {**row, "seeds": per_seed, "final_tokens": final_tokens if longer else None,
            "test_bpb_mean": float(tests.mean()),
            "test_bpb_std": float(tests.std(ddof=1)) if len(tests) > 1 else 0.0,
            "val_bpb_mean": float(np.mean([s["val_bpb"] for s in per_seed])),
            "wall_s": row["wall_s"] + time.perf_counter() - t0}


def _test_bpb(row: dict) -> float:
    """A row's test bits per byte: the mean over its seeds where it has several."""
    return row.get("test_bpb_mean", row["test_bpb"])


def _keep(path: Path, row: dict) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(row) + "\n")


def _write(work: Path, args, config) -> None:
    rows = [json.loads(line) for path in sorted(work.glob("rows-*ms.jsonl")) for line in path.read_text().splitlines()]
    rows.sort(key=lambda r: r["budget_ms"])
    budgets = sorted({r["budget_ms"] for r in rows})
    t = config.training
    lines = ["# `slm` search: searched hybrid vs latency-matched single-operator models", "",
             f"Generated by `experiments/slm_search.py --budgets {' '.join(f'{b:g}' for b in budgets)} "
             f"--candidates {args.candidates} --population {args.population} --seeds {args.seeds} --threads {args.threads}"
             f"{f' --final-tokens {args.final_tokens}' if args.final_tokens else ''}"
             f"{' --retrain-only' if args.retrain_only else ''}`; "
             f"{machine_line()}; {args.threads} training thread(s).", "",
             f"Every model: {t.tokens} training tokens ({t.steps} steps of {t.batch_size} x {t.context} bytes, "
             f"AdamW, cosine); width = the widest on the ladder whose measured decode latency (median + "
             f"spread) meets the budget, stepped from the predicted one; decode latency measured on "
             f"local-cpu after {config.context} tokens (batch 1, ONNX Runtime, 1 thread). Hybrid search: "
             f"{args.candidates} layouts trained, population {config.population_size} (first "
             f"{len(config.seed_layouts)} members: the seed layouts `"
             f"{'`, `'.join(t.replace('|', '/') for t in config.seed_layouts)}`, shrunk to fit; then random), "
             f"tournament {config.tournament_size}, {config.finalists} finalists. Recall: {config.recall.num_pairs} "
             f"key-value pairs, {config.recall.num_queries} queries, {config.recall.train_steps} training steps "
             f"of {config.recall.batch_size} sequences, scored on {config.recall.test_sequences} held-out "
             f"sequences (chance 1/128).", "",
             "Stages are separated by `/` in the table (`|` in the canonical strings).", "",
             *([f"Reported models (hybrid and baselines, every seed) trained anew after the search on "
                f"{args.final_tokens} tokens ({args.final_tokens // (t.batch_size * t.context)} steps, same "
                f"schedule); the search ranked its candidates by the {t.tokens}-token proxy run.", ""]
               if args.final_tokens and args.final_tokens != t.tokens else []),
             f"Losses: mean over {args.seeds} training seed(s) per model (each at the model's measured width); "
             f"test bits per byte by seed in the last column. Device levels: "
             f"{os.environ.get('NAS_LEVELS') or 'the default per-user file'}.", "",
             "| budget ms | model | architecture | measured ms/token | val bpb | test bpb | recall | wall s "
             "| test bpb by seed |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['budget_ms']:g} | {r['model']} | `{r['arch'].replace('|', '/')}` | - | - | - | - | {r['error']} | - |")
            continue
        if r["arch"] is None:
            lines.append(f"| {r['budget_ms']:g} | {r['model']} | none measured within budget | - | - | - | - | "
                         f"{r['wall_s']:.0f} | - |")
            continue
        recall = f"{100 * r['recall']:.1f}%" if r["recall"] is not None else "-"
        test = f"{_test_bpb(r):.3f}" + (f" ± {r['test_bpb_std']:.3f}" if len(r.get("seeds", [])) > 1 else "")
        by_seed = " / ".join(f"{s['test_bpb']:.3f}" for s in r.get("seeds", [])) or f"{r['test_bpb']:.3f}"
        lines.append(f"| {r['budget_ms']:g} | {r['model']} | `{r['arch'].replace('|', '/')}` | {r['measured_ms']:.3f} | "
                     f"{r.get('val_bpb_mean', r['val_bpb']):.3f} | {test} | {recall} | {r['wall_s']:.0f} | {by_seed} |")
    wins = []
    for budget in budgets:
        group = [r for r in rows if r["budget_ms"] == budget and r.get("test_bpb") is not None]
        hybrid = next((r for r in group if r["model"].startswith("hybrid")), None)
        if hybrid and len(group) > 1:
            best = min(group, key=_test_bpb)
            wins.append(f"{budget:g} ms: lowest test bpb {best['model']} ({_test_bpb(best):.3f}); hybrid "
                        f"{'within' if hybrid['measured_ms'] <= budget else 'OVER'} budget")
    total_s = sum(r["wall_s"] for r in rows)
    lines += ["", *(f"- {w}" for w in wins)]
    finalists = [(r["budget_ms"], f) for r in rows if r["model"].startswith("hybrid") for f in r.get("finalists", [])]
    if finalists:
        lines += ["", "Hybrid finalists (lowest predicted-width loss first), each moved along the width ladder by "
                      "measurement:", "",
                  "| budget ms | finalist | trained at width | measured ms/token | spread ms | val bpb | recall |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for budget, f in finalists:
            val = f"{f['val_bpb']:.3f}" if f.get("val_bpb") is not None else "over budget at every width tried"
            recall = f"{100 * f['recall_accuracy']:.1f}%" if f.get("recall_accuracy") is not None else "-"
            lines.append(f"| {budget:g} | `{f['arch'].replace('|', '/')}` | {f['trained_width']} | "
                         f"{f['measured_ms']:.3f} | {f['spread_ms']:.3f} | {val} | {recall} |")
    searched = [(r["budget_ms"], c) for r in rows if r["model"].startswith("hybrid") for c in r.get("candidates", [])]
    if searched:
        lines += ["", "Every layout the hybrid search trained, in the order trained (at its predicted width):", "",
                  "| budget ms | candidate | predicted ms/token | val bpb |", "| --- | --- | --- | --- |"]
        for budget, c in searched:
            lines.append(f"| {budget:g} | `{c['arch'].replace('|', '/')}` | {c['predicted_ms']:.3f} | "
                         f"{c['val_bpb']:.3f} |")
    lines += ["",
              f"Wall time, all models: {total_s / 60:.1f} min."]
    text = "\n".join(lines) + "\n"
    write_keeping_reading(Path(args.results), text)
    print(text)


if __name__ == "__main__":
    raise SystemExit(main())
