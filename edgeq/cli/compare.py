"""``edgeq compare``: two saved runs, judged output by output, offline."""

from __future__ import annotations


import click

from edgeq.cli.common import path_arg, output_file, load_run, console, write_json_file, exit_for_gates, output_options, output_spec


@click.command()
@click.argument("ref", type=path_arg)
@click.argument("cand", type=path_arg)
@click.option("--json", "json_path", type=output_file, help="Write the comparison here (- for stdout).")
@click.option("--html", "html_path", type=output_file,
              help="Write an HTML report to this file ('-' is refused: stdout is for --json -).")
@click.option("--fail-on", help="Gates, e.g. drop=0.05,flip=0.1,sqnr=20,verdict=degraded,min-n=100 "
              "(exit 1 when crossed); stress=degraded|catastrophic gates on the stress findings beside the verdict.")
@click.option("--model", "model_path", type=path_arg, help="The float .tflite, so output kinds can use the op "
              "that makes each output.")
@click.option("--output-index", type=int, hidden=True, help="Old spelling of --verdict-outputs INDEX.")
@output_options
def compare(ref, cand, json_path, html_path, fail_on, model_path, output_index, output_flags, outputs_spec,
            labels_for, verdict_outputs, min_n):
    """Compare two run directories (REF = float, CAND = quantized), offline, output by output."""
    from edgeq.analysis.compare import compare_runs
    from edgeq.analysis.gates import evaluate_gates, parse_gates
    from edgeq.reports.report import build_report, print_summary

    gates = parse_gates(fail_on)
    if output_index is not None and not verdict_outputs:
        verdict_outputs = str(output_index)
    spec = output_spec(output_flags, outputs_spec, labels_for, verdict_outputs)
    model_info = None
    if model_path is not None:
        from edgeq.models.modelinfo import read_model

        model_info = read_model(model_path)
    ref_run, cand_run = load_run(ref), load_run(cand)
    # runs merged from adaptive rounds stopped sampling on what they saw: their intervals are anytime-valid
    interval = "anytime" if ref_run.meta.get("rounds") or cand_run.meta.get("rounds") else "wilson"
    report = build_report(compare_runs(ref_run, cand_run, spec=spec, model_info=model_info, min_n=min_n,
                                       interval=interval), ref_run, cand_run)
    report["gates"] = evaluate_gates(report, gates)
    print_summary(console(), report)
    write_json_file(json_path, report)
    if html_path:
        from edgeq.reports.report import write_report_html

        write_report_html(html_path, report, {"float": ref_run, "quant": cand_run})
    exit_for_gates(report)


