"""``nas predictor ...``: meta-train, adapt to a device, predict and evaluate
latency predictors."""

from __future__ import annotations

import csv
import json
import sys

from nas.errors import UserInputError

#: the one line ``nas --help`` shows for this command
HELP = "few-shot latency predictors (HELP and baselines)"


def register(subparsers) -> None:
    from nas.predictors import DEFAULT_METHOD, list_predictors
    from nas.search_space import list_spaces

    parser = subparsers.add_parser("predictor", help=HELP)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    train = actions.add_parser("meta-train", help="meta-train a predictor on the meta-train devices")
    train.add_argument("--space", required=True, choices=list_spaces())
    train.add_argument("--method", default=DEFAULT_METHOD, choices=list_predictors())
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", help="checkpoint to write (default: the package's shipped checkpoint)")
    train.set_defaults(handler=_meta_train)

    refs = actions.add_parser("reference-archs", help="the 10 architectures to measure on a new device")
    refs.add_argument("--space", required=True, choices=list_spaces())
    refs.set_defaults(handler=_reference_archs)

    tune = actions.add_parser("finetune", help="adapt the default predictor to one device")
    tune.add_argument("--space", required=True, choices=list_spaces())
    source = tune.add_mutually_exclusive_group(required=True)
    source.add_argument("--measurements", help="CSV with header arch,latency_ms including the 10 reference archs")
    source.add_argument("--device", help="catalog device to measure (or replay) the reference archs on")
    tune.add_argument("--out", required=True, help="adapted checkpoint to write")
    tune.set_defaults(handler=_finetune)

    predict = actions.add_parser("predict", help="predict latencies with an adapted checkpoint")
    predict.add_argument("--predictor", required=True, help="checkpoint written by 'nas predictor finetune'")
    predict.add_argument("--archs", required=True, help="file with one canonical architecture string a line")
    predict.add_argument("--coverage", type=float, default=0.9, help="interval coverage (default 0.9)")
    predict.add_argument("--out", help="CSV to write (default: standard output)")
    predict.set_defaults(handler=_predict)

    evaluate = actions.add_parser("eval", help="score a method on the meta-test devices (slm: each setting held "
                                                 "out in turn, beside the FLOPs, params and transfer baselines)")
    evaluate.add_argument("--space", required=True, choices=list_spaces())
    evaluate.add_argument("--method", default=DEFAULT_METHOD, choices=list_predictors())
    evaluate.add_argument("--seeds", type=int, default=1)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object (key mean_spearman)")
    evaluate.set_defaults(handler=_eval)


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def _meta_train(args) -> int:
    from nas.outputs import check_output_file
    from nas.predictors import DEFAULT_METHOD, meta_train, shipped_checkpoint_path

    out = args.out or shipped_checkpoint_path(args.space, "default" if args.method == DEFAULT_METHOD else args.method)
    check_output_file(out)
    predictor = meta_train(args.method, args.space, args.seed, _log)
    predictor.save(out)
    print(f"wrote {out}")
    return 0


def _reference_archs(args) -> int:
    from nas.predictors import reference_archs
    from nas.search_space import get_space

    search_space = get_space(args.space)
    for arch in reference_archs(args.space):
        print(search_space.to_string(arch))
    return 0


def _finetune(args) -> int:
    from nas.predictors import finetune
    from nas.predictors.measurements import read_measurements_csv

    from nas.outputs import check_output_file

    check_output_file(args.out)
    measurements = read_measurements_csv(args.measurements, args.space) if args.measurements else None
    predictor = finetune(args.space, measurements, args.device)
    predictor.save(args.out)
    print(f"adapted the {predictor.name} predictor to "
          f"{args.device or args.measurements}; wrote {args.out}")
    return 0


def _predict(args) -> int:
    from nas.search_space import read_arch_file
    from nas.predictors import load_predictor

    if not 0 < args.coverage < 1:
        raise UserInputError(f"--coverage must be between 0 and 1, got {args.coverage}")
    if args.out:
        from nas.outputs import check_output_file

        check_output_file(args.out)
    predictor = load_predictor(args.predictor)
    archs = read_arch_file(args.archs, predictor.space)
    predicted, low, high = predictor.predict_interval(archs, coverage=args.coverage)
    with_interval = bool((high > low).any())
    handle = open(args.out, "w", newline="") if args.out else sys.stdout
    try:
        writer = csv.writer(handle)
        writer.writerow(["arch", "latency_ms"] + (["low_ms", "high_ms"] if with_interval else []))
        for i, arch in enumerate(archs):
            row = [predictor.search_space.to_string(arch), f"{predicted[i]:.4f}"]
            writer.writerow(row + ([f"{low[i]:.4f}", f"{high[i]:.4f}"] if with_interval else []))
    finally:
        if args.out:
            handle.close()
    if args.out:
        print(f"wrote {len(archs)} predictions to {args.out}")
    return 0


def _eval(args) -> int:
    from nas.predictors.evaluation import evaluate_method

    if args.space == "slm":
        return _eval_leave_one_out(args)
    result = evaluate_method(args.method, args.space, args.seeds, log=_log)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.method} on the {args.space} meta-test devices, adapted on {result['num_samples']} "
          f"samples per device, {args.seeds} seed(s)")
    print(f"{'device':15s} {'spearman':>8s} {'kendall':>8s} {'MAPE %':>8s} {'±10 %':>8s} {'cover90':>8s}")
    rows = result["devices"] + [{"device": "mean", **{k: result[f"mean_{k}"] for k in
                                                         ("spearman", "kendall", "mape", "within_10", "coverage_90")}}]
    for row in rows:
        coverage = "-" if row["coverage_90"] is None else f"{row['coverage_90']:.1f}"
        print(f"{row['device']:15s} {row['spearman']:8.3f} {row['kendall']:8.3f} {row['mape']:8.1f} "
              f"{row['within_10']:8.1f} {coverage:>8s}")
    return 0


def _eval_leave_one_out(args) -> int:
    """The slm table's columns are settings of one machine: each is held out in turn."""
    from nas.predictors.leave_one_out import BASELINES, compare

    methods = [args.method] + [m for m in BASELINES if m != args.method]
    results = compare(methods, args.space, log=_log)
    if args.json:
        print(json.dumps(results))
        return 0
    first = results[methods[0]]
    print(f"Spearman on the {args.space} table, each setting held out in turn (meta-trained on the others, "
          f"adapted on {first['num_samples']} samples of the held-out one)")
    print(f"{'held-out setting':22s} " + " ".join(f"{m:>9s}" for m in methods))
    for i, device in enumerate(d["device"] for d in first["devices"]):
        print(f"{device:22s} " + " ".join(f"{results[m]['devices'][i]['spearman']:9.3f}" for m in methods))
    print(f"{'mean':22s} " + " ".join(f"{results[m]['mean_spearman']:9.3f}" for m in methods))
    return 0
