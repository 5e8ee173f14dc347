# `make run ARGS="--source cam0"` and `make test` install what they need into .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run test faults bench docs clean

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

# Two workers by default (the suite waits on servers and subprocesses as much as it computes);
# each test file stays in one worker, with its module fixtures. PYTEST_JOBS=0 runs in-process.
PYTEST_JOBS ?= 2
XDIST = $(if $(filter 0,$(PYTEST_JOBS)),,-n $(PYTEST_JOBS) --dist loadfile)

# --durations=15: CI's log says where the time goes.
test: $(STAMP)
	$(PY) -m pytest $(XDIST) --durations=15 $(PYTEST_ARGS)

# Second environment: the newest langfuse 4.x (for self-hosted Langfuse v3) under the
# tracing, delivery, prompt, report and outbox tests, and the fault tests where Langfuse fails
# or a signal ends a run with Langfuse hanging (the VLM and input faults trace the same way on
# both SDKs: the main pass has them). Only langfuse 4 is installed into it; everything else
# comes from .venv's site-packages through a .pth file, which sys.path puts after this venv's
# own packages (a full second install of torch etc. took ~70 s).
VENV4  := .venv-sdk4
STAMP4 := $(VENV4)/.installed

.PHONY: test-sdk4

$(STAMP4): $(STAMP) requirements-sdk4.txt
	rm -rf $(VENV4)
	$(PYTHON) -m venv $(VENV4)
	$(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > \
		"$$($(VENV4)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/main_venv.pth"
	$(VENV4)/bin/python -m pip install --quiet -r requirements-sdk4.txt
	$(VENV4)/bin/python -c 'import langfuse; assert langfuse.__version__.startswith("4."), langfuse.__version__'
	touch $(STAMP4)

test-sdk4: $(STAMP4)
	$(VENV4)/bin/python -m pytest $(XDIST) -m "not faults" tests/test_tracker.py tests/test_langfuse_delivery.py \
		tests/test_prompts.py tests/test_trace_report.py tests/test_outbox.py tests/test_rotation.py \
		tests/test_trace_frames.py tests/test_frame_trace.py $(PYTEST_ARGS)
	$(VENV4)/bin/python -m pytest $(if $(filter 0,$(PYTEST_JOBS)),,-n $(PYTEST_JOBS)) -m faults \
		-k "langfuse or signals" $(PYTEST_ARGS)

faults: $(STAMP)
	$(PY) -m pytest -m faults $(PYTEST_ARGS)

# docs/options.md is rendered from the commands (tests/test_help_defaults.py keeps it equal)
docs: $(STAMP)
	$(PY) -c 'from real_time_summarizer import cli; from video_summarizer.cli_docs import render_options; open("docs/options.md", "w").write(render_options(cli))'

bench: $(STAMP)
	$(PY) -m bench.benchmark $(ARGS)

clean:
	rm -rf $(VENV) $(VENV4) .pytest_cache
