"""``nas quantize``: the fastest mixed int8/float32 version of a trained
model whose accuracy stays inside a tolerance, measured on the device."""

from __future__ import annotations

import json

HELP = "mixed-precision int8 quantization of a trained model inside an accuracy tolerance"


def register(subparsers) -> None:
    from nas.quantization.bisection import SEARCHES
    from nas.quantization.data import DATASETS, FASHION_MNIST_PACKAGE
    from nas.quantization.pipeline import PRECISIONS
    from nas.quantization.scorers import DEFAULT_SCORER, list_scorers

    parser = subparsers.add_parser(
        "quantize", help=HELP,
        description="Order the model's Conv/Gemm/MatMul layers by sensitivity, then bisect over how many of the "
                    "least sensitive run in int8 (ONNX Runtime static quantization, calibrated once), checking "
                    "ONNX Runtime's accuracy on a validation split at each step; report the held-out test accuracy "
                    "and the latency measured on the device. Writes model_int8.onnx and quantization.json.")
    parser.add_argument("--model", required=True, metavar="DIR_OR_ONNX",
                        help="a 'nas search --out' folder (trained weights) or an .onnx classifier")
    parser.add_argument("--data", required=True, choices=DATASETS, help="labelled images the model classifies")
    parser.add_argument("--data-dir", metavar="DIR",
                        help=f"folder of the dataset (fashion-mnist: the IDX files of 'apt-get install "
                             f"{FASHION_MNIST_PACKAGE}', default where it installs them)")
    parser.add_argument("--device", default="local-cpu", help="catalog device timed by ONNX Runtime (default local-cpu)")
    parser.add_argument("--tolerance", default="1%",
                        help="accuracy that may be lost: '1%%' or '0.5pt' (points), or '99.9%%' (share of the float "
                             "accuracy to keep); default 1%%")
    parser.add_argument("--scorer", default=DEFAULT_SCORER, choices=list_scorers(),
                        help=f"sensitivity ordering (default {DEFAULT_SCORER})")
    parser.add_argument("--search", default="bisection", choices=list(SEARCHES),
                        help="bisection (about log2 N evaluations) or greedy_fallback (one layer at a time)")
    parser.add_argument("--precision", default="int8", choices=list(PRECISIONS),
                        help="activation precision of the quantized layers (default int8; others are refused "
                             "where the runtime does not run them faster, unless --force)")
    parser.add_argument("--force", action="store_true", help="build a precision the runtime does not run fast")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random scorer and Hutchinson probes")
    parser.add_argument("--out", metavar="DIR", help="where to write (default: beside the model)")
    parser.add_argument("--no-latency", action="store_true", help="do not time the models on the device")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.set_defaults(handler=_quantize)


def _quantize(args) -> int:
    from nas.quantization.pipeline import REPORT_FILE, quantize_model

    result = quantize_model(args.model, args.data, args.data_dir, device=args.device, tolerance=args.tolerance,
                            scorer=args.scorer, search=args.search, precision=args.precision, force=args.force,
                            seed=args.seed, out=args.out, measure_latency=not args.no_latency, progress=True)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(result.summary())
        print(f"wrote {result.quantized_path} and {result.quantized_path.parent / REPORT_FILE}")
    return 0
