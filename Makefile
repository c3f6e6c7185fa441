# Two commands a new user needs (see README):
#   make course   build the embedded model, run every lesson with papermill, write the report, build the book
#   make test     run the test suite
# Lessons whose inputs did not change are restored from .cache/executed; FORCE=1 executes them all.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FORCE_FLAG := $(if $(filter 1 yes true,$(FORCE)),--force)

.PHONY: course test venv tiny run book colab nbval clean lab mutation

# The environment is created on first use. torch goes in first and alone, so pip
# takes the CPU build where the machine has one instead of a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0" || $(PY) -m pip install --quiet "torch>=2.4"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

tiny: $(STAMP)
	$(PY) -m course_lib build-tiny

course: $(STAMP)
	$(PY) -m course_lib course $(FORCE_FLAG)

run: $(STAMP)
	$(PY) -m course_lib run $(FORCE_FLAG)

book: $(STAMP)
	$(PY) -m course_lib book

# Colab-ready copies of the lessons (the publish workflow pushes them to their own branch).
colab: $(STAMP)
	$(PY) -m course_lib colab

test: $(STAMP)
	bash tests/run_tests.sh

# JupyterLab in the repository; the lessons' .py files open as notebooks (jupytext), MyST rendered.
lab: $(STAMP)
	$(PY) -m course_lib lab

# Execute every lesson source through nbval (slow: the same work as `make run`).
nbval: $(STAMP)
	$(PY) -m pytest --nbval-lax notebooks/

# Mutation check (slow; not part of `make test`): mutmut changes one thing at a time in the modules of
# [tool.mutmut] (pyproject.toml) and runs the fast unit tests that reach it; then the kill rate per module,
# then tests/hand_mutations.py (issue 19's one-line bugs in what mutmut skips).
# One module: make mutation MUTANTS='course_lib.level3.metrics.*'   Survivors: .venv/bin/mutmut results
MUTANTS ?=
MUTATION_JOBS ?= 1
mutation: $(STAMP)
	nice -n 10 $(VENV)/bin/mutmut run --max-children $(MUTATION_JOBS) $(MUTANTS)
	@$(VENV)/bin/mutmut results --all true | sed -E 's/^ *([A-Za-z0-9_.]+)\.x[^:]*: (.*)$$/\1 \2/' | awk \
	  '$$2 != "not" && $$2 != "skipped" {n[$$1]++; if ($$2 == "killed" || $$2 == "timeout") k[$$1]++} \
	   END {for (m in n) printf "%-40s %4d/%-4d killed  %5.1f%%\n", m, k[m], n[m], 100 * k[m] / n[m]}' | sort
	# what mutmut cannot mutate (decorated functions such as generate.sample_answers): issue 19's bugs, by hand
	nice -n 10 $(PY) tests/hand_mutations.py

clean:
	rm -rf _build book/executed
