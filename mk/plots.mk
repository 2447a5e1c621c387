# `dvc plots show` without a network. DVC's own page loads Vega, Vega-Lite and vega-embed from cdn.jsdelivr.net and
# stays blank offline; plots/template.html loads them from plots/vendor/ instead, where `make plots-vendor` copies
# the builds of the npm packages pinned in plots/package.json and plots/package-lock.json (`npm ci`: the exact
# versions and integrity hashes of the lock). Included by the main Makefile, which provides BIN (the study's
# .venv/bin) and STAMP (its environment); exposes the phony targets:
#
#     plots-vendor   npm ci into plots/node_modules, copy the three .min.js files into plots/vendor/, drop the rest
#     plots          plots-vendor, then `dvc plots show` into dvc_plots/index.html with plots/template.html
#
# .dvc/config names the template too (`dvc config plots.html_template ../plots/template.html`, a path relative to
# .dvc/), so a plain `dvc plots show` from the project root also writes an offline page once plots-vendor has run.
#
# The pins keep the majors of DVC's page (dvc_render's VegaRenderer: vega@5.20.2, vega-lite@5.2.0,
# vega-embed@6.18.2), whose templates write Vega-Lite v5 specs, at their latest releases. To move them: edit
# plots/package.json, then `npm install --package-lock-only --prefix plots` (rewrites the lock; commit both).
#
# The template's <script src> are relative to the page: ../plots/vendor/ reaches the project's plots/vendor/ from
# any folder directly below the project root, hence PLOTS_OUT is dvc_plots (DVC's default out dir). Needs npm
# (Debian: apt-get install nodejs npm) only to vendor; the page itself needs nothing but a browser.

# Whether included before or after the main Makefile's first target, this file leaves the default goal alone.
PLOTS_DEFAULT_GOAL := $(.DEFAULT_GOAL)

PLOTS_DIR    := plots
PLOTS_VENDOR := $(PLOTS_DIR)/vendor
PLOTS_OUT    := dvc_plots
PLOTS_STAMP  := $(PLOTS_VENDOR)/.installed
# package (in plots/node_modules) -> its browser build, copied flat into plots/vendor/
PLOTS_BUILDS := vega/build/vega.min.js vega-lite/build/vega-lite.min.js vega-embed/build/vega-embed.min.js
PLOTS_JS     := $(addprefix $(PLOTS_VENDOR)/,$(notdir $(PLOTS_BUILDS)))

# A vendored file deleted by hand is restored too: without all of them the stamp counts as missing.
ifneq ($(words $(wildcard $(PLOTS_JS))),$(words $(PLOTS_JS)))
$(shell rm -f $(PLOTS_STAMP))
endif

.PHONY: plots plots-vendor

plots-vendor: $(PLOTS_STAMP)

# --ignore-scripts: the packages are prebuilt, nothing of theirs needs to run at install time. --prefer-offline: the
# lock pins every version and hash, so npm's cache (~/.npm) serves them without asking the registry when it has them.
# node_modules (~50 MB) goes once the three files are copied; `npm ci` would empty it first anyway.
$(PLOTS_STAMP): $(PLOTS_DIR)/package.json $(PLOTS_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "plots-vendor needs npm, to install Vega from the npm registry:" \
		"apt-get install nodejs npm (Debian/Ubuntu), or Node.js from https://nodejs.org"; exit 1; }
	npm ci --prefix $(PLOTS_DIR) --ignore-scripts --prefer-offline --no-audit --no-fund
	mkdir -p $(PLOTS_VENDOR)
	cp $(addprefix $(PLOTS_DIR)/node_modules/,$(PLOTS_BUILDS)) $(PLOTS_VENDOR)/
	rm -rf $(PLOTS_DIR)/node_modules
	touch $@

# The page must load no script from the network: a template without DVC's CDN tags is checked here too.
plots: $(PLOTS_STAMP) | $(STAMP)
	$(BIN)/dvc plots show --html-template $(PLOTS_DIR)/template.html -o $(PLOTS_OUT)
	@if grep -q '<script src="http' $(PLOTS_OUT)/index.html 2>/dev/null; then \
		echo "$(PLOTS_OUT)/index.html loads scripts from the network: see $(PLOTS_DIR)/template.html"; exit 1; fi

.DEFAULT_GOAL := $(PLOTS_DEFAULT_GOAL)
