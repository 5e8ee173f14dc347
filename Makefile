# `make run ARGS="--source cam0"` and `make test` install what they need into .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run test faults bench clean

$(STAMP): requirements.txt requirements-faces.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	# face_recognition's only missing dependency (dlib) comes from dlib-bin
	$(PY) -m pip install --quiet --no-deps -r requirements-faces.txt
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) real_time_summarizer.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

faults: $(STAMP)
	$(PY) -m pytest -m faults $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m bench.benchmark $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
