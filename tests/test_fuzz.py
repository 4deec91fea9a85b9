"""Mutation fuzzing of the readers of files edgeq did not write (a short slice for CI).

Every example mutates a valid seed (an input set, a run directory pair, a .tflite, an
output spec) and reads it as edgeq does; the test fails on any exception that is not an
EdgeqError. ``EDGEQ_FUZZ_EXAMPLES`` sets examples per target (default 60);
``scripts/fuzz.py --minutes N`` runs the same targets for a fixed time.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_targets import (SPEC_SEED, build_seeds, fuzz_inputset, fuzz_model, fuzz_outputs_spec, fuzz_rundir,
                          mutate_spec, read_outputs_spec, run_target)

EXAMPLES = int(os.environ.get("EDGEQ_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

mutations = st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "zero"]),
                               st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=6)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, example_tflite, example_data):
    work = tmp_path_factory.mktemp("fuzz-seeds")
    return build_seeds(work, example_tflite[0], example_data)


@pytest.fixture(scope="module")
def work():
    with tempfile.TemporaryDirectory(prefix="edgeq-fuzz-") as folder:
        yield Path(folder)


@FUZZ
@given(mutations)
def test_input_set_reader(seeds, work, mutation_list):
    fuzz_inputset(seeds, work, mutation_list)


@FUZZ
@given(mutations)
def test_tflite_reader(seeds, work, mutation_list):
    fuzz_model(seeds, work, mutation_list)


@FUZZ
@given(mutations, st.integers(0, 6), st.booleans())
def test_run_directory_reader(seeds, work, mutation_list, which, resign):
    fuzz_rundir(seeds, work, mutation_list, which, resign)


@FUZZ
@given(mutations)
def test_outputs_spec_reader(seeds, work, mutation_list):
    fuzz_outputs_spec(seeds, work, mutation_list)


def test_the_seeds_are_read_cleanly(seeds, work):
    """Without mutations every target succeeds: the fuzzing starts from valid files."""
    assert fuzz_inputset(seeds, work, []) == "ok"
    assert fuzz_model(seeds, work, []) == "ok"
    assert fuzz_rundir(seeds, work, [], 0, False) == "ok"
    assert fuzz_outputs_spec(seeds, work, []) == "ok"
    assert [run_target(read_outputs_spec, spec) for spec in seeds.outputs_specs] == ["ok", "ok"]  # TOML, JSON
    assert mutate_spec(SPEC_SEED, []) == SPEC_SEED
