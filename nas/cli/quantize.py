"""``nas quantize``: the fastest mixed int8/float32 version of a trained
model whose accuracy stays inside a tolerance, measured on the device; for a
language model (an ``nas search --space slm`` folder), 4-bit weight-only
MatMul inside a bits-per-byte tolerance."""

from __future__ import annotations

import json
from pathlib import Path

HELP = "mixed-precision int8 quantization of a trained model inside an accuracy tolerance"


def register(subparsers) -> None:
    from nas.quantization.bisection import SEARCHES
    from nas.quantization.data import DATASETS, FASHION_MNIST_PACKAGE
    from nas.quantization.language import LANGUAGE_PRECISION
    from nas.quantization.pipeline import PRECISIONS
    from nas.quantization.scorers import DEFAULT_SCORER, list_scorers
    from nas.quantization.timing import INT4_BLOCK_SIZE, INT4_BLOCK_SIZES

    parser = subparsers.add_parser(
        "quantize", help=HELP,
        description="Order the model's Conv/Gemm/MatMul layers by sensitivity, then bisect over how many of the "
                    "least sensitive run in int8 (ONNX Runtime static quantization, calibrated once), checking "
                    "ONNX Runtime's accuracy on a validation split at each step; report the held-out test accuracy "
                    "and the latency measured on the device. Writes model_int8.onnx and quantization.json.")
    parser.add_argument("--model", required=True, metavar="DIR_OR_ONNX",
                        help="a 'nas search --out' folder (trained weights; an slm folder quantizes its decode "
                             "graph) or an .onnx classifier")
    parser.add_argument("--data", choices=DATASETS,
                        help="labelled images the classifier classifies (a language model reads its corpus)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help=f"folder of the dataset (fashion-mnist: the IDX files of 'apt-get install "
                             f"{FASHION_MNIST_PACKAGE}', default where it installs them)")
    parser.add_argument("--device", default="local-cpu", help="catalog device timed by ONNX Runtime (default local-cpu)")
    parser.add_argument("--tolerance", default="1%",
                        help="accuracy that may be lost: '1%%' or '0.5pt' (points), or '99.9%%' (share of the float "
                             "accuracy to keep); for a language model bits per byte that may be added ('0.05bpb') "
                             "or a relative increase ('1%%'); default 1%%")
    parser.add_argument("--scorer", default=DEFAULT_SCORER, choices=list_scorers(),
                        help=f"sensitivity ordering (default {DEFAULT_SCORER})")
    parser.add_argument("--search", default="bisection", choices=list(SEARCHES),
                        help="bisection (about log2 N evaluations) or greedy_fallback (one layer at a time)")
    parser.add_argument("--precision", default=None, choices=list(PRECISIONS) + [LANGUAGE_PRECISION],
                        help="int8 (classifiers' default; int16 is refused where the runtime does not run it "
                             "faster, unless --force) or int4 (4-bit weight-only MatMul, language models' default, "
                             "refused where it does not measure faster, unless --force)")
    parser.add_argument("--block-size", type=int, default=None, metavar="N",
                        help=f"language models: weights per scale of the 4-bit MatMul, one of "
                             f"{', '.join(map(str, INT4_BLOCK_SIZES))} (default {INT4_BLOCK_SIZE}; larger blocks "
                             f"round more coarsely)")
    parser.add_argument("--force", action="store_true", help="build a precision the runtime does not run fast")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random scorer and Hutchinson probes")
    parser.add_argument("--out", metavar="DIR", help="where to write (default: beside the model)")
    parser.add_argument("--no-latency", action="store_true", help="do not time the models on the device")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.set_defaults(handler=_quantize)


def _quantize(args) -> int:
    from nas.errors import UserInputError
    from nas.quantization.language import LANGUAGE_PRECISION, is_language_model_folder
    from nas.quantization.pipeline import REPORT_FILE, quantize_model

    if is_language_model_folder(args.model):
        return _quantize_language_model(args)
    if args.precision == LANGUAGE_PRECISION:
        raise UserInputError("--precision int4 (weight-only MatMul) is for language models (an 'nas search --space "
                             "slm' folder); classifiers run int8 convolutions: use --precision int8")
    if args.block_size is not None:
        raise UserInputError("--block-size sets the 4-bit MatMul blocks of a language model ('nas search --space slm' "
                             "folder); a classifier is quantized to int8 per channel: leave --block-size out")
    if args.data is None:
        raise UserInputError("--data is required for a classifier: the labelled images it classifies "
                             "(digits, fashion-mnist, cifar10, imagefolder)")
    result = quantize_model(args.model, args.data, args.data_dir, device=args.device, tolerance=args.tolerance,
                            scorer=args.scorer, search=args.search, precision=args.precision or "int8",
                            force=args.force,
                            seed=args.seed, out=args.out, measure_latency=not args.no_latency, progress=True)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(result.summary())
        print(f"wrote {result.quantized_path} and {result.quantized_path.parent / REPORT_FILE}")
    return 0


def _quantize_language_model(args) -> int:
    from nas.errors import UserInputError
    from nas.quantization.language import LANGUAGE_PRECISION, REPORT_FILE, quantize_language_model, summary
    from nas.quantization.timing import INT4_BLOCK_SIZE, int4_block_size

    if args.precision not in (None, LANGUAGE_PRECISION):
        raise UserInputError(f"a language model is quantized to 4-bit weight-only MatMul (--precision int4), not "
                             f"{args.precision}: static int8 quantization of its decode step measured slower than "
                             f"float32 on this runtime (experiments/results/mixed_precision_device.md)")
    if args.data is not None:
        raise UserInputError("--data names images for classifiers; a language model is scored on its corpus: "
                             "leave --data out")
    block_size = int4_block_size(INT4_BLOCK_SIZE if args.block_size is None else args.block_size)
    report = quantize_language_model(args.model, device=args.device, tolerance=args.tolerance, force=args.force,
                                     out=args.out, scorer=args.scorer, seed=args.seed, progress=True,
                                     block_size=block_size)
    if args.json:
        print(json.dumps(report))
    else:
        print(summary(report))
        print(f"wrote {report['quantized_model']} and {Path(report['quantized_model']).parent / REPORT_FILE}")
    return 0
