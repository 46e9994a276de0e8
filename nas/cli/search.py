"""``nas search``: the most accurate architecture that meets a latency budget
on a device, verified there when it can be measured."""

from __future__ import annotations

import json
import sys


#: the one line ``nas --help`` shows for this command
HELP = "find the most accurate architecture that meets a latency budget on a device"


def _strategy_option_groups(parser) -> dict[str, list[str]]:
    """Let each strategy add its own options; returns strategy name -> option dests.

    Strategies sharing an ``add_arguments`` (tpe and nsga2 share Optuna's)
    add their options once and both own them.
    """
    from nas.search import list_strategies, strategy_class

    by_hook: dict[object, list[str]] = {}
    for name in list_strategies():
        cls = strategy_class(name)
        by_hook.setdefault(getattr(cls.add_arguments, "__func__", cls.add_arguments), []).append(name)
    owned: dict[str, list[str]] = {}
    for names in by_hook.values():
        before = {id(a) for a in parser._actions}
        strategy_class(names[0]).add_arguments(parser)
        dests = [a.dest for a in parser._actions if id(a) not in before]
        for name in names:
            owned[name] = dests
    return owned


def register(subparsers) -> None:
    from nas.search import list_strategies
    from nas.search_space import list_spaces

    parser = subparsers.add_parser(
        "search", help=HELP,
        description="Adapt the latency predictor on the device's 10 reference architectures, search the space for "
                    "the most accurate architecture predicted to meet the budget, then measure the best candidates "
                    "on the device (when it can be measured) and return the most accurate one whose MEASURED "
                    "latency meets it.")
    parser.add_argument("--space", default="nb201", choices=list_spaces(), help="search space (default nb201)")
    parser.add_argument("--device", required=True,
                        help="catalog device ('nas devices list', yours with 'nas devices add'), or any name "
                             "with --measurements: the result is then a prediction for that device")
    parser.add_argument("--latency", required=True,
                        help="latency budget, e.g. 14ms, 0.02s; a measured latency meets it when the median of "
                             "per-run ONNX Runtime timings on the device (at the device's typical speed; 'nas "
                             "profile --help') plus its spread (which covers the device's slow moments) is "
                             "within it")
    parser.add_argument("--dataset", default=None,
                        help="task the accuracy is for (nb201: cifar10, cifar100 (default), imagenet16-120; fbnet: "
                             "the supernet's data, digits (default, bundled), cifar10 or imagefolder with --data-dir)")
    parser.add_argument("--strategy", choices=list_strategies(), default=None,
                        help="search strategy (default: exhaustive where the predictor can score the whole space, "
                             "as for nb201; else evolution)")
    parser.add_argument("--evaluations", type=int, default=None, metavar="N",
                        help="architectures the strategy may score (default: the strategy's, e.g. 3000 for evolution; "
                             "200 where each is a network run, as with fbnet's supernet estimator)")
    parser.add_argument("--seed", type=int, default=0, help="search and weight-initialisation seed (default 0)")
    parser.add_argument("--verify", type=int, default=10, metavar="N",
                        help="at most N verification measurements on the device (default 10; 0: trust the prediction)")
    parser.add_argument("--measurements", metavar="M.csv",
                        help="the 10 reference architectures measured on the device (header arch,latency_ms), "
                             "instead of measuring them")
    parser.add_argument("--store", metavar="PATH|URL",
                        help="measurement store: a SQLite file, or postgresql+psycopg://USER@HOST:5432/DB that a "
                             "team shares (default $NAS_STORE or ~/.cache/nas/measurements.db)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="training data, for strategies that train a network and for fbnet's --dataset")
    parser.add_argument("--out", metavar="DIR", help="write model.onnx, result.json and summary.txt here")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the summary")
    parser.add_argument("--quantize", action="store_true",
                        help="then quantize the trained network the search returns to mixed int8/float32 inside "
                             "--tolerance and time both on the device ('nas quantize --help'); needs --out and a "
                             "strategy that trains the network (proxyless, or the slm search)")
    parser.add_argument("--tolerance", default="1%",
                        help="accuracy --quantize may lose: '1%%' or '0.5pt' (points), or '99.9%%' (share of the "
                             "float accuracy to keep); for --space slm bits per byte that may be added ('0.05bpb') "
                             "or a relative increase ('1%%'); default 1%%")
    parser.set_defaults(handler=_search, strategy_dests=_strategy_option_groups(parser),
                        strategy_actions=list(parser._actions))
    from nas.slm import cli as slm_cli

    slm_cli.add_arguments(parser)


def check_arguments(args) -> None:
    """Refuse a malformed budget before anything heavy is imported."""
    from nas.budget import parse_latency_ms

    parse_latency_ms(args.latency)


def _strategy_options(args) -> dict:
    from nas.errors import UserInputError
    from nas.search import default_strategy, strategy_class

    name = args.strategy or default_strategy(args.space)
    options = {}
    if args.evaluations is not None:
        options["num_evaluations"] = args.evaluations
    mine = set(args.strategy_dests.get(name, ()))
    defaults = {a.dest: a.default for a in args.strategy_actions}
    for other, dests in args.strategy_dests.items():
        for dest in dests:
            value = getattr(args, dest, None)
            if dest in mine:
                if value is not None:
                    options[dest] = value
            elif value != defaults.get(dest):
                owners = sorted(n for n, d in args.strategy_dests.items() if dest in d)
                flag = next((a.option_strings[0] for a in args.strategy_actions if a.dest == dest), dest)
                raise UserInputError(f"{flag} applies to strateg{'ies' if len(owners) > 1 else 'y'} "
                                     f"{' and '.join(owners)}, not {name}; add --strategy {owners[-1]}")
    if strategy_class(name).needs_data:
        options["data_dir"] = args.data_dir
    return options


def _search(args) -> int:
    from nas.search import search_under_budget
    from nas.slm import cli as slm_cli

    if args.quantize:
        _check_quantize(args)
    if args.space == "slm":  # trains every candidate: its own pipeline
        code = slm_cli.search_command(args)
        return _quantize_language_model(args) if args.quantize and code == 0 else code
    slm_cli.refuse_elsewhere(args)
    options = _strategy_options(args)
    if args.out:
        from nas.outputs import check_output_dir

        check_output_dir(args.out)
    try:
        outcome = search_under_budget(args.space, args.device, args.latency, dataset=args.dataset,
                                      strategy=args.strategy, strategy_options=options, seed=args.seed,
                                      verify_max=args.verify, measurements=args.measurements, store=args.store,
                                      progress=True, data_dir=args.data_dir)
    except KeyboardInterrupt:
        _explain_resume(args)
        return 130
    # The result is printed before any file is written: a file system that fails now cannot lose it.
    if args.json:
        record = outcome.to_dict()
        if args.out:
            record["out"] = args.out
        print(json.dumps(record), flush=True)
    else:
        print(outcome.summary(), flush=True)
    if args.out:
        try:
            outcome.write(args.out)
        except OSError as error:
            print(f"nas search: could not write the result to {args.out}: {error}; the result is printed above",
                  file=sys.stderr)
            return 1
        if not args.json:
            print(f"wrote {args.out}/result.json, summary.txt"
                  + (f", model.onnx (weights {outcome.weights})" if outcome.arch else ""))
    if args.quantize and outcome.arch is not None:
        return _quantize(args)
    return 0 if outcome.arch is not None else 1


def _check_quantize(args) -> None:
    from nas.errors import UserInputError
    from nas.quantization.loop import check_search_quantizable
    from nas.search import default_strategy, strategy_class

    if args.space == "slm":  # its decode graph, in 4-bit weight-only MatMul inside a bits-per-byte tolerance
        from nas.quantization.language import BitsTolerance

        if args.out is None:
            raise UserInputError("--quantize writes the quantized decode graph beside the search's: add --out DIR")
        BitsTolerance.parse(args.tolerance)
        return
    name = args.strategy or default_strategy(args.space)
    check_search_quantizable(name, strategy_class(name).needs_data, args.out, args.tolerance,
                             getattr(args, "data", None))


def _quantize(args) -> int:
    from nas.quantization.loop import quantize_search_result

    result = quantize_search_result(args.out, data=getattr(args, "data", None) or "digits", data_dir=args.data_dir,
                                    device=args.device, tolerance=args.tolerance, seed=args.seed, progress=True)
    if not args.json:
        print(result.summary())
        print(f"wrote {result.quantized_path}; result.json records float32 and quantized accuracy and latency")
    return 0


def _quantize_language_model(args) -> int:
    from nas.quantization.language import quantize_language_model, summary

    report = quantize_language_model(args.out, device=args.device, tolerance=args.tolerance, progress=True)
    if not args.json:
        print(summary(report))
    return 0


def _explain_resume(args) -> None:
    from nas.profilers.store import default_store_location, shown_location

    store = shown_location(args.store or default_store_location())
    hint = [f"\nnas search: interrupted. Every measurement finished on {args.device} is kept in the "
            f"measurement store {store}; run the same command again to resume: stored measurements are "
            f"reused, not repeated."]
    if getattr(args, "storage", None):
        hint.append(f"The Optuna study {args.study_name or ''} in {args.storage} continues from its finished trials.")
    print(" ".join(hint), file=sys.stderr)
