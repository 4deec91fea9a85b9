"""``edgeq convert``: float + quantized .tflite files and a model card."""

from __future__ import annotations

import click

from edgeq.cli.common import path_arg, output_file, result_line, verbosity, write_json_file, RunProgress


@click.command()
@click.argument("model", type=path_arg)
@click.option("-o", "--outdir", type=path_arg, required=True, help="Folder for the .tflite files and the model card.")
@click.option("--policy", type=click.Choice(["dynamic-range", "float16", "int8", "float"]), default="dynamic-range",
              show_default=True)
@click.option("--calibration", type=path_arg, help="NPZ of typical inputs (needed by --policy int8).")
@click.option("--target-runtime", type=click.Choice(["latest", "tflite-runtime-2.14"]), default="latest",
              show_default=True, help="Make a model this runtime can load.")
@click.option("--json", "json_path", type=output_file, help="Write the model card here too (- for stdout).")
def convert(model, outdir, policy, calibration, target_runtime, json_path):
    """Convert MODEL (.keras/.h5, SavedModel folder or float .tflite) to float + quantized TFLite."""
    from edgeq.models.convert import convert_model

    with RunProgress() as progress:
        progress.phase(f"converting {model} ({policy})")
        result = convert_model(model, outdir, policy=policy, calibration=calibration, target_runtime=target_runtime,
                               show_tool_output=verbosity() > 0)
    result_line(f"{result.float_path}\n{result.quant_path}\n{result.card_path}")
    result_line(result.summary)
    write_json_file(json_path, result.card)
