"""The ``--space slm`` branch of ``nas search``: its options and the call to
:func:`nas.slm.search.search_slm`."""

from __future__ import annotations

import json
import sys

#: options only the slm search reads (dest names), refused with another space
SLM_OPTIONS = ("layouts", "context", "tokens", "population", "finalists")


def add_arguments(parser) -> None:
    """Add the slm search's options to the ``nas search`` parser."""
    group = parser.add_argument_group(
        "slm (language-model search, --space slm)",
        "--verify caps the finalists' device measurements; --evaluations the layouts trained (default 10); "
        "--resume continues an interrupted search from the trained candidates in --checkpoint-dir "
        "(default: a folder next to the measurement store, one per device, budget, context and seed); "
        "--storage and --study share the evolution between workers on one Optuna study")
    group.add_argument("--arch", dest="layouts", action="append", metavar="LAYOUT",
                       help="train and score this layout (e.g. 'D F M2 F | A F M2 F | -') instead of evolving; "
                            "repeatable; the width is the widest meeting the budget")
    group.add_argument("--context", default=None, metavar="TOKENS",
                       help="decode latency is per token after a prompt of this many tokens (default 512)")
    group.add_argument("--tokens", type=int, default=None, metavar="N",
                       help="training tokens per candidate (default 40960)")
    group.add_argument("--population", type=int, default=None, metavar="N",
                       help="aging-evolution population (default 6)")
    group.add_argument("--finalists", type=int, default=None, metavar="N",
                       help="candidates measured on the device and scored on associative recall (default 2)")
    if "--resume" not in parser._option_string_actions:  # shared with the proxyless strategy's options
        group.add_argument("--resume", action="store_true", help="continue an interrupted search")
    if "--checkpoint-dir" not in parser._option_string_actions:
        group.add_argument("--checkpoint-dir", dest="checkpoint_dir", default=None, metavar="DIR",
                           help="where trained candidates are kept")


def refuse_elsewhere(args) -> None:
    """Exit 2 when an slm-only option is given with another space."""
    from nas.errors import UserInputError

    for dest in SLM_OPTIONS:
        if getattr(args, dest, None) not in (None, False, []):
            flag = "--arch" if dest == "layouts" else f"--{dest}"
            raise UserInputError(f"{flag} applies to --space slm, not {args.space}")


def search_command(args) -> int:
    """Run ``nas search --space slm`` from parsed arguments; returns the exit code."""
    import dataclasses

    from nas.errors import UserInputError
    from nas.slm.search import SlmSearchConfig, check_context, search_slm
    from nas.slm.training import TrainingConfig

    if args.measurements or args.dataset or args.data_dir:
        flag = "--measurements" if args.measurements else "--dataset" if args.dataset else "--data-dir"
        raise UserInputError(f"{flag} does not apply to --space slm: it trains on the shipped text corpus and "
                             f"measures its finalists on the device; leave {flag} out")
    if args.strategy not in (None, "evolution"):
        raise UserInputError(f"--space slm searches with aging evolution only, not --strategy {args.strategy}; "
                             f"leave --strategy out")
    base = SlmSearchConfig()
    options = {"seed": args.seed}
    if args.context is not None:
        options["context"] = check_context(args.context)
    if args.evaluations is not None:
        options["num_candidates"] = args.evaluations
    if args.population is not None:
        options["population_size"] = args.population
        options["tournament_size"] = min(base.tournament_size, args.population)
    if args.finalists is not None:
        options["finalists"] = args.finalists
    if args.verify is not None:
        options["verify"] = args.verify
    if args.tokens is not None:
        options["training"] = TrainingConfig(tokens=args.tokens)
    config = dataclasses.replace(base, **options)
    if args.out:
        from nas.outputs import check_output_dir

        check_output_dir(args.out)
    try:
        outcome = search_slm(args.device, args.latency, config=config, layouts=args.layouts,
                             work_dir=args.checkpoint_dir, resume=bool(args.resume), out=args.out,
                             store=args.store, progress=True, storage=getattr(args, "storage", None),
                             study_name=getattr(args, "study_name", None))
    except KeyboardInterrupt:
        print("\nnas search: interrupted. Trained candidates are kept; run the same command with --resume "
              "to continue without training them again.", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(dict(outcome.to_dict(), **({"out": args.out} if args.out else {}))))
    else:
        print(outcome.summary())
        if args.out:
            print(f"wrote {args.out}/result.json, summary.txt"
                  + (", decode.onnx, prefill.onnx (trained weights)" if outcome.arch else ""))
    return 0 if outcome.arch is not None else 1
