# Two commands do everything: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
BABEL_KEYWORDS := -k _l -k _pp -k _pp_n:1,2 -k lazy_gettext -k ngettext:1,2

.PHONY: demo test venv translations bench-selection bench-pdf bench-mail bench-load clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip "setuptools>=64" wheel
	$(PY) -m pip install --quiet -e '.[test,demo,celery]'
	touch $(STAMP)

venv: $(STAMP)

# `make demo` starts again from fresh data (database and outbox); `make demo DEMO_KEEP=1` keeps them.
demo: $(STAMP)
	$(PY) -m examples.ent_console.seed $(if $(filter-out 0 no false,$(DEMO_KEEP)),,--reset) $(if $(wildcard ../shared/fixtures/entcore-samples/*.csv),--import-be1d ../shared/fixtures/entcore-samples)
	$(PY) -m examples.ent_console.serve

# One test process per core (pytest-xdist): most tests wait on a socket, a browser or a
# worker process. `make test TEST_PROCESSES=0` runs them in this process alone.
TEST_PROCESSES ?= auto
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_PROCESSES) $(PYTEST_ARGS)

# Refresh the catalog after changing texts: extract, merge, compile.
translations: $(STAMP)
	$(VENV)/bin/pybabel extract -F babel.cfg $(BABEL_KEYWORDS) --no-location --sort-output -o translations/flask_publipostage.pot .
	$(VENV)/bin/pybabel update -D flask_publipostage -i translations/flask_publipostage.pot -d translations --width 0 --ignore-obsolete --no-fuzzy-matching
	$(VENV)/bin/pybabel compile -D flask_publipostage -d translations

bench-selection: $(STAMP)
	$(PY) -m bench.bench_selection $(BENCH_ARGS)

bench-pdf: $(STAMP)
	$(PY) -m bench.bench_pdf $(BENCH_ARGS)

bench-mail: $(STAMP)
	$(PY) -m bench.bench_mail $(BENCH_ARGS)

# The demo's production server under 20 clients for 60 s (BENCH_ARGS="--seconds 20" for less).
bench-load: $(STAMP)
	$(PY) -m bench.bench_load $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info instance

# axe-core (the accessibility check of every page, tests/test_every_page.py), fetched from
# the npm registry into build/ (ignored by git); .ci/run runs it. Without it the test
# fetches it itself, or skips (fails under PUBLIPOSTAGE_REQUIRE_BROWSER, as in CI).
.PHONY: axe
axe:
	mkdir -p build/axe-core
	cd build/axe-core && rm -f axe-core-*.tgz && npm pack axe-core@4.10 --silent && tar -xzf axe-core-*.tgz package/axe.min.js
