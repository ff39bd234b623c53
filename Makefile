# Switchboard: two commands.
#
#   make run    install what the gateway needs, then run it with examples/quickstart.yaml
#   make test   install what the tests need, then everything CI runs (.ci/run is `make test`)
#   make image  the container images switchboard/gateway:<version> and switchboard/operator:<version>
#               (scripts/image.sh: release binaries built here on a base assembled here, no registry;
#               IMAGE_FROM=source: the Containerfile's Rust builder and distroless base; docs/helm.md)
#
# `make check-examples` builds both binaries and validates every examples/*.yaml with the gateway (part of `test`).

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

CARGO ?= cargo
GATEWAY_BIN := $(or $(CARGO_TARGET_DIR),target)/debug/switchboard-gateway

.PHONY: run test check-examples image

run:
	@bash scripts/setup.sh --gateway
	$(CARGO) run --release -p switchboard-gateway -- --config examples/quickstart.yaml

# Cheap static checks first; the test suite last, so the output ends with its summary line.
test:
	@bash scripts/setup.sh
	$(CARGO) fmt --all -- --check
	python3 scripts/modgraph.py  # the gateway's module graph: no import cycles, no import back up the request path
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@# Licenses, bans and sources (deny.toml). Not advisories: that database is fetched from
	@# GitHub, which the build machines cannot reach; run `cargo deny check advisories` where it is.
	$(CARGO) deny check --hide-inclusion-graph licenses bans sources
	@$(MAKE) --no-print-directory check-examples
	python3 operator/tests/validate_examples.py
	IMAGE_PROFILE=debug IMAGE_TAG=test bash scripts/image.sh
	SWITCHBOARD_CHART_TESTS_STRICT=1 .venv-chart/bin/python -m pytest -p no:cacheprovider -q charts/tests
	cd clients/js && npm test
	$(CARGO) test --workspace --doc
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		echo "$(CARGO) nextest run --workspace --no-fail-fast"; \
		SWITCHBOARD_IMAGE_TESTS_STRICT=1 $(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		echo "cargo-nextest not found; falling back to: $(CARGO) test --workspace --no-fail-fast"; \
		SWITCHBOARD_IMAGE_TESTS_STRICT=1 $(CARGO) test --workspace --no-fail-fast; \
	fi

image:
	@bash scripts/setup.sh --gateway
	bash scripts/image.sh

check-examples:
	$(CARGO) build -p switchboard-gateway --bin switchboard-gateway -p switchboard-operator --bin switchboard-operator
	@shopt -s nullglob; files=(examples/*.yaml); \
	if [ $${#files[@]} -eq 0 ]; then echo "check-examples: no examples/*.yaml found" >&2; exit 1; fi; \
	bad=0; \
	for f in "$${files[@]}"; do \
		if out=$$("$(GATEWAY_BIN)" --check --config "$$f" 2>&1) && grep -qxF ok <<<"$$out"; then \
			echo "$$f: ok"; \
		else \
			echo "$$f: FAILED (expected the line 'ok' from --check):" >&2; \
			sed 's/^/    /' <<<"$$out" >&2; \
			bad=1; \
		fi; \
	done; \
	exit $$bad
