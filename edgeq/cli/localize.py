"""``edgeq localize``: which op dynamic-range quantization breaks, ranked and confirmed."""

from __future__ import annotations

import click

from edgeq.analysis.rules import FIX_TARGET
from edgeq.cli.common import FiniteFloatRange, console, diagnostics, job_options_for, output_file, path_arg, \
    wait_option, write_json_file

RESOLVER_HELP = (" Every whole-model number (condition drops, confirmations, search, verification, latency) is "
                 "measured with it, on the host or --device; the per-op analysis always runs on the host's "
                 "built-in kernels with delegates off (the only setting that keeps intermediate tensors).")


def repair_options(f):
    """The options localize and fix share: model sources, the condition set, the target."""
    for decorator in (
        click.option("--data", type=path_arg, help="NPZ with x (and optional y): the risky suite is built from it."),
        click.option("--inputs", "inputs_path", type=path_arg, help="A risky suite already built (edgeq inputs "
                     "risky), instead of --data."),
        click.option("--quantized", type=path_arg, help="The quantized .tflite to explain (default: convert MODEL "
                     "to dynamic range)."),
        click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True),
        click.option("--max-per-category", type=click.IntRange(min=1), default=200, show_default=True,
                     help="Samples per condition when the suite is built from --data."),
        click.option("--target-drop", type=FiniteFloatRange(0, 1, min_open=True, max_open=True), default=FIX_TARGET,
                     show_default=True, help="A field condition whose drop (accuracy drop with labels, else top-1 "
                     "flip rate) exceeds this needs repair; stress conditions (near-boundary points, searched "
                     "inputs) are reported beside it, as in the verdict."),
        click.option("--json", "json_path", type=output_file, help="Write the result as JSON here (- for stdout)."),
        click.option("-o", "--outdir", type=path_arg, help="Keep the converted and rebuilt models here "
                     "(default: a temporary folder)."),
        click.option("--device", "device_name", metavar="NAME", help="Measure the drops and latencies on this "
                     "inventory device through its agent (default: this host's interpreter). The per-op "
                     "analysis stays on the host: the agent cannot keep intermediate tensors."),
        click.option("--inventory", type=path_arg, envvar="EDGEQ_INVENTORY", help="Device inventory (edgeq.toml)."),
        wait_option,
        resolver_option,
    ):
        f = decorator(f)
    return f


def resolver_option(f):
    """``--resolver``: evaluate's run option (same choices, same default AUTO), so a fix is measured
    on the kernels the target runs."""
    f = job_options_for(("resolver",))(f)
    option = next(p for p in f.__click_params__ if p.name == "resolver")
    option.help = (option.help or "") + RESOLVER_HELP
    return f


def measurer_for(device_name, inventory, wait_s, workdir, announce, resolver="AUTO"):
    """The host, or the named device (a context manager: it holds the device's session and lock), both
    running whole models under ``resolver``."""
    from edgeq.repair.measure import HostMeasurer

    if device_name is None:
        return HostMeasurer(resolver=resolver)
    from edgeq.repair.device import open_device

    return open_device(device_name, inventory, workdir=workdir / "device", wait_s=wait_s, announce=announce,
                       resolver=resolver)


def announcer():
    out = diagnostics()
    return lambda text: out.print(text, highlight=False, markup=False, soft_wrap=True)


def prepare_bench(model, workdir, data, inputs_path, quantized, seed, max_per_category, announce, device=None):
    from edgeq.repair.bench import prepare

    return prepare(model, workdir, data=data, inputs=inputs_path, quantized=quantized, seed=seed,
                   max_per_category=max_per_category, announce=announce, device=device)


class Workdir:
    """OUTDIR when given, else a temporary folder removed at the end."""

    def __init__(self, outdir):
        self.outdir, self.tmp = outdir, None

    def __enter__(self):
        from pathlib import Path

        if self.outdir is not None:
            from edgeq.files import ensure_writable_dir

            ensure_writable_dir(self.outdir)
            return Path(self.outdir)
        import tempfile

        self.tmp = tempfile.TemporaryDirectory(prefix="edgeq-repair-")
        return Path(self.tmp.name)

    def __exit__(self, *exc):
        if self.tmp is not None:
            self.tmp.cleanup()

    def forget(self, report: dict) -> dict:
        """Without OUTDIR the work folder is deleted at the end: paths into it become null (they would name
        nothing), and ``work_files`` says so."""
        if self.tmp is None:
            return report
        root = self.tmp.name

        def scrub(value):
            if isinstance(value, dict):
                return {k: scrub(v) for k, v in value.items()}
            if isinstance(value, list):
                return [scrub(v) for v in value]
            return None if isinstance(value, str) and value.startswith(root) else value

        cleaned = scrub(report)
        cleaned["work_files"] = "not kept (no -o OUTDIR): the rebuilt float and quantized models were deleted"
        return cleaned


@click.command()
@click.argument("model", type=path_arg)
@repair_options
@click.option("--worst", type=click.IntRange(min=1), default=3, show_default=True,
              help="How many of the worst conditions to localize on.")
@click.option("--confirm", type=click.IntRange(min=0), default=3, show_default=True,
              help="How many leading ops to confirm by re-quantizing with each kept float.")
def localize(model, data, inputs_path, quantized, seed, max_per_category, target_drop, json_path, outdir,
             device_name, inventory, wait_s, resolver, worst, confirm):
    """Rank the ops of MODEL (.keras/.h5, SavedModel or float .tflite) that break under dynamic range."""
    from edgeq.repair.localize import localize as run_localize

    announce = announcer()
    workdir_of = Workdir(outdir)
    with workdir_of as workdir, \
            measurer_for(device_name, inventory, wait_s, workdir, announce, resolver) as measurer:
        bench = prepare_bench(model, workdir, data, inputs_path, quantized, seed, max_per_category, announce,
                              measurer)
        result = workdir_of.forget(run_localize(bench, target_drop, worst=worst, confirm=confirm, announce=announce))
    print_localize(console(), result)
    write_json_file(json_path, result)


def print_localize(out, result: dict) -> None:
    """The ranked table, within 80 columns; tensor names on their own line."""
    def say(text):
        out.print(text, highlight=False, markup=False, soft_wrap=True)

    if result["status"] != "localized":
        say(f"nothing to localize: {result['reason']}")
        for line in measured_lines(result):
            say(line)
        return
    import textwrap

    for line in textwrap.wrap(f"conditions: {', '.join(result['conditions'])} ({result['samples']} samples)", 80):
        say(line)
    for line in measured_lines(result):
        say(line)
    say(f"{'#':>2} {'op':>3} {'type':<15} {'layer':<20} {'stretch':>8} {'SQNR dB':>7} {'flips':>5} {'recov.':>6}")
    for e in result["ranking"]:
        say(f"{e['rank']:>2} {e['op_index']:>3} {e['op_type'][:15]:<15} {(e['layer'] or '-')[:20]:<20} "
            f"{_num(e['stretch'], '.0f'):>8} {_num(e['sqnr_db'], '.1f', 'inf'):>7} "
            f"{100 * e['flip_share']:>4.0f}% {_pct(e['recovered_share']):>6}")
        say(f"       tensor {e['tensor'][:66]}")


def measured_lines(result: dict) -> list[str]:
    """Which kernels each number came from, within 80 columns: the whole-model numbers (drops,
    latencies) and the per-op analysis (always the host's built-in kernels)."""
    import textwrap

    why = " (the device agent has no op that keeps intermediate tensors)" if "device" in result else ""
    return (textwrap.wrap(f"drops and latencies measured on {result['measured_on']}", 80)
            + textwrap.wrap(f"per-op analysis on {result['analysis_on']}{why}", 80))


def _num(value, spec, none="-"):
    return none if value is None else format(value, spec)


def _pct(value):
    return "-" if value is None else f"{100 * value:.0f}%"
