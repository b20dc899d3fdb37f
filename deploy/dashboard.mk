# deploy/dashboard.mk — the web dashboard (deploy/dashboard/README.md),
# assembled into $(BUILD)/dashboard/: the page (index.html, app.js,
# style.css) and the browser bundles of its npm libraries in vendor/, the
# directory Mosquitto serves with `http_dir` (deploy/broker.sh --dashboard).
# No build step: the files are copied as they are.
#
# The libraries come from deploy/dashboard/package-lock.json, installed by
# deploy/install-deps.sh --npm into $(BUILD)/npm (the only step that needs
# the npm registry; the page loads nothing from outside at run time).
# test/dashboard_check.js takes playwright-core from there too.

DASH_NPM := $(BUILD)/npm
DASH_NPM_STAMP := $(DASH_NPM)/.installed
DASH_DIR := $(BUILD)/dashboard
DASH_PAGE := $(addprefix $(DASH_DIR)/,index.html app.js style.css)
# vendor file <- file in $(DASH_NPM)/node_modules
DASH_VENDOR := \
  mqtt.min.js:mqtt/dist/mqtt.min.js \
  msgpack.min.js:@msgpack/msgpack/dist.umd/msgpack.min.js \
  uPlot.iife.min.js:uplot/dist/uPlot.iife.min.js \
  uPlot.min.css:uplot/dist/uPlot.min.css
DASH_VENDOR_FILES := $(foreach v,$(DASH_VENDOR),$(DASH_DIR)/vendor/$(word 1,$(subst :, ,$(v))))

# after the Debian packages (node and npm among them): never two apt runs
# side by side under make -j
# When the registry cannot be reached (or its TLS chain is not trusted:
# a fresh root behind an intercepting proxy), the rest of fedmq still
# builds and tests: the dashboard is left out, $(DASH_DIR)/UNAVAILABLE
# says why, test/it_dashboard.sh reports SKIP and the demo says so.
# `rm -rf $(DASH_NPM)` tries again.
$(DASH_NPM_STAMP): deploy/dashboard/package.json deploy/dashboard/package-lock.json \
                   deploy/install-deps.sh | $(DEPS_STAMP)
	@mkdir -p $(DASH_NPM)
	@if deploy/install-deps.sh --npm $(DASH_NPM) >$(DASH_NPM)/install.log 2>&1; then \
	  cat $(DASH_NPM)/install.log; rm -f $(DASH_NPM)/UNAVAILABLE; \
	else \
	  tail -5 $(DASH_NPM)/install.log >&2; \
	  { echo "the dashboard's npm packages could not be installed:"; \
	    grep -m1 -E 'npm ERR! (code|request)|failed' $(DASH_NPM)/install.log; \
	    echo "(full log: $(DASH_NPM)/install.log; rm -rf $(DASH_NPM) to try again)"; \
	  } >$(DASH_NPM)/UNAVAILABLE; \
	  echo "dashboard: WARNING: $$(cat $(DASH_NPM)/UNAVAILABLE | tr '\n' ' ')" >&2; \
	  echo "dashboard: WARNING: building and testing without the dashboard" >&2; \
	fi
	@touch $@

$(DASH_DIR)/%: deploy/dashboard/%
	@mkdir -p $(@D)
	cp $< $@

# one rule per vendor file, each from its package (and its licence next to
# it: the bundles are served, so their notices go with them)
define DASH_VENDOR_RULE
$(DASH_DIR)/vendor/$(1): $(DASH_NPM_STAMP)
	@mkdir -p $$(@D)
	@if [ -f $(DASH_NPM)/UNAVAILABLE ]; then \
	  cp $(DASH_NPM)/UNAVAILABLE $(DASH_DIR)/UNAVAILABLE; \
	else \
	  rm -f $(DASH_DIR)/UNAVAILABLE; \
	  cp $(DASH_NPM)/node_modules/$(2) $$@; \
	  for f in $(DASH_NPM)/node_modules/$(firstword $(subst /dist, ,$(2)))/LICENSE*; do \
	    cp "$$$$f" $$@.LICENSE.txt; break; done; \
	fi
endef
$(foreach v,$(DASH_VENDOR),$(eval $(call DASH_VENDOR_RULE,$(word 1,$(subst :, ,$(v))),$(word 2,$(subst :, ,$(v))))))

dashboard: $(DASH_PAGE) $(DASH_VENDOR_FILES)
all: dashboard
.PHONY: dashboard
