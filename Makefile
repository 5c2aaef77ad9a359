# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make book   installs what the book needs and builds it strictly (every chapter executed)
#   make test   installs what the tests need and runs them
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
MATHJAX_VERSION := 3.2.2
MATHJAX := book/_mathjax/mathjax
ORT_VERSION := 1.30.0
ORT := book/_ort/ort

.PHONY: book pdf test check-book bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# One stamp per set of extras, remade when pyproject.toml changes.
$(VENV)/.installed-%: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[$*]"
	touch $@

# $(call npm_unpack,PACKAGE,VERSION): a release from the npm registry, unpacked into
# $(VENV)/npm/PACKAGE/package/, for the book to serve itself (offline).
npm_unpack = rm -rf $(VENV)/npm/$(1) && mkdir -p $(VENV)/npm/$(1) && cd $(VENV)/npm/$(1) && \
	npm pack --silent $(1)@$(2) >/dev/null && tar xzf $(1)-$(2).tgz

# MathJax, so that equations render offline.
$(MATHJAX)/tex-chtml.js:
	$(call npm_unpack,mathjax,$(MATHJAX_VERSION))
	mkdir -p $(MATHJAX) && cp -r $(VENV)/npm/mathjax/package/es5/. $(MATHJAX)/

# ONNX Runtime Web, which runs the trained network on the page where the reader draws (book/draw.md):
# its script, its WebAssembly and the module that loads it.
$(ORT)/ort.wasm.min.js:
	$(call npm_unpack,onnxruntime-web,$(ORT_VERSION))
	mkdir -p $(ORT) && cd $(VENV)/npm/onnxruntime-web/package/dist && \
		cp ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm ort.wasm.min.js $(CURDIR)/$(ORT)/

# The strict build of the whole book: any cell error, warning or broken reference fails it. Chapters
# execute once and are cached (_build/.jupyter_cache); tools/book_cache.py empties the cache when the
# package, the data, the execute settings or the installed libraries change; a fresh clone runs them all.
book: $(VENV)/.installed-book $(MATHJAX)/tex-chtml.js $(ORT)/ort.wasm.min.js
	$(BIN)/python tools/book_cache.py
	$(BIN)/jupyter-book build --all -W -n --keep-going book

# The whole book as one PDF (_build/latex/book.pdf), from the chapters `make book` executed: it
# refuses to start if a chapter would execute, then builds the HTML again (from the cache) so that its
# first page links the PDF. TeX Live comes from Debian's packages, installed here when missing.
pdf: $(VENV)/.installed-book
	@command -v xelatex >/dev/null && command -v latexmk >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended texlive-xetex \
		tex-gyre fonts-freefont-otf latexmk >/dev/null)
	$(BIN)/python tools/book_cache.py --check
	$(BIN)/jupyter-book build --all -W -n --keep-going --builder pdflatex book
	$(BIN)/jupyter-book build -W -n --keep-going book

# The tests, and ruff's format and lint of the code and of the book's code cells (88 columns).
test: $(VENV)/.installed-test
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/python tools/lint_book_cells.py
	$(BIN)/python -m pytest -q

# Checks of the built editions (run after `make book` and `make pdf`): error outputs, missing figures,
# every page in headless Chromium, the chapters' notebooks (the quickest one run outside the book), and
# the PDF's pages and text (Poppler). Chromium and Poppler come from Debian's packages.
check-book: $(VENV)/.installed-test $(VENV)/.installed-browser
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v pdftotext >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq chromium chromium-driver poppler-utils >/dev/null)
	$(BIN)/python -m pytest -q tests_book

# Speed against Keras (JAX) and PyTorch (CPU), each in its own process, in turns (benchmarks/run.py).
bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf _build book/_mathjax book/_ort
