# Deployment checks and Lambda builds (issue #6). Included from the top-level Makefile after
# VENV is set:
#
#   include mk/deploy.mk
#
# template-check  cfn-lint + checkov (template as written and rendered per scenario) + the
#                 template assertions (tests/template). First run installs its tools (see below).
# sam-validate    `sam validate --lint` (offline; plain `sam validate` needs AWS credentials).
# sam-template    SAM_ENV=<samconfig environment>: template.yaml with its Fn::ForEach loops
#                 unrolled for that environment -> target/deploy/<env>/template.json (SAM CLI
#                 1.170 cannot package functions inside Fn::ForEach, aws/aws-sam-cli#9117).
# sam-build       SAM_ENV=...: sam-template, then `sam build --config-env <env>` (cargo-lambda).
# sam-deploy      SAM_ENV=...: sam-build, then `sam deploy --config-env <env>` (needs AWS).
# lambda-build    `cargo lambda build --profile lambda-release --arm64` for enqueue and drain,
#                 prints sizes (bootstraps in target/lambda/<bin>/, or under $CARGO_TARGET_DIR
#                 if set). The profile (Cargo.toml) is release + fat LTO, one codegen unit,
#                 panic = "abort": the size settings, kept away from the release/bench builds.
# lambda-invoke-check  both functions under `cargo lambda watch`, invoked with fixtures through
#                 `cargo lambda invoke`, effects checked in the emulators (tests/lambda-invoke-check.sh;
#                 part of `make test`).
#
# The SAM CLI and checkov live in venvs of their own under $(VENV)/opt: both pin boto3/botocore
# (to different versions), and installing either into $(VENV) itself would downgrade the
# botocore that moto_server in $(VENV) runs on. cfn-lint comes with the SAM CLI.

VENV ?= .venv
DEPLOY_PIP := pip install --quiet --disable-pip-version-check
SAM_VENV := $(VENV)/opt/sam
CHECKOV_VENV := $(VENV)/opt/checkov
SAM_PY := $(SAM_VENV)/bin/python
SAM := $(SAM_VENV)/bin/sam
CFN_LINT := $(SAM_VENV)/bin/cfn-lint
CHECKOV := $(CHECKOV_VENV)/bin/checkov
CHECKOV_FLAGS := --framework cloudformation --compact --quiet --skip-download
TEMPLATE_SCENARIOS := two-destinations cross-account-new-table three-destinations
SAM_ENVS := us-east-1 eu-west-1
RENDERED := target/template-check
LAMBDA_BINS := enqueue drain heartbeat
LAMBDA_TARGET := aarch64-unknown-linux-gnu
LAMBDA_PROFILE := lambda-release
# SAM always runs `cargo lambda build --release`: the same settings as [profile.lambda-release],
# as overrides of the release profile for that build only.
SAM_CARGO_ENV := CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
  CARGO_PROFILE_RELEASE_PANIC=abort
# The issue's size goal for each stripped arm64 bootstrap.
LAMBDA_MAX_BYTES := 8388608

export SAM_CLI_TELEMETRY := 0

.PHONY: template-check sam-validate lambda-build lambda-invoke-check deploy-tools sam-template \
  sam-build sam-deploy
SAM_ENV ?=

# SAM CLI (brings cfn-lint and aws-sam-translator) + pytest for tests/template. ~75 s.
$(SAM_VENV)/.installed:
	python3 -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/$(DEPLOY_PIP) "aws-sam-cli==1.*" "cfn-lint==1.*" "pytest==9.*"
	touch $@

# checkov. ~75 s.
$(CHECKOV_VENV)/.installed:
	python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/$(DEPLOY_PIP) "checkov==3.*"
	touch $@

# Both venvs, installed side by side. Measured cold: ~75 s each alone; both at once 3 min 40 s on
# a 2-core machine busy with cargo builds.
deploy-tools:
	@$(MAKE) --no-print-directory -f $(firstword $(MAKEFILE_LIST)) -j2 $(SAM_VENV)/.installed $(CHECKOV_VENV)/.installed

# checkov exits 0 when it cannot parse a file (and then checks nothing): insist on a parse and
# on at least one passed check, and fail on any failed one.
define run_checkov
	@out="$$($(CHECKOV) $(CHECKOV_FLAGS) $(1) 2>&1)"; rc=$$?; echo "$$out"; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; \
	if echo "$$out" | grep -q "Parsing errors"; then echo "checkov could not parse $(1)"; exit 1; fi; \
	echo "$$out" | grep -Eq "Passed checks: [1-9]" || { echo "checkov checked nothing in $(1)"; exit 1; }
endef

template-check: deploy-tools
	$(CFN_LINT) template.yaml
	$(call run_checkov,-f template.yaml)
	@# checkov cannot read Fn::ForEach: check the rendered templates too (every destination).
	@rm -rf $(RENDERED) && mkdir -p $(RENDERED)
	@for s in $(TEMPLATE_SCENARIOS); do \
	  $(SAM_PY) tests/template/render.py --scenario $$s -o $(RENDERED)/$$s.json || exit 1; done
	$(call run_checkov,-d $(RENDERED))
	@# What sam build/deploy will get (make sam-template), for each samconfig environment.
	@for e in $(SAM_ENVS); do \
	  $(SAM_PY) tests/template/render.py --stage deployable --env $$e -o $(RENDERED)/deploy-$$e/template.json || exit 1; done
	$(CFN_LINT) $(foreach e,$(SAM_ENVS),$(RENDERED)/deploy-$(e)/template.json)
	$(SAM_PY) -m pytest -p no:cacheprovider tests/template -q

sam-validate: $(SAM_VENV)/.installed
	$(SAM) validate --lint --template template.yaml

sam-template: $(SAM_VENV)/.installed
	@test -n "$(SAM_ENV)" || { echo "usage: make $@ SAM_ENV=<environment in samconfig.toml, e.g. us-east-1>"; exit 2; }
	$(SAM_PY) tests/template/render.py --stage deployable --env $(SAM_ENV) -o target/deploy/$(SAM_ENV)/template.json
	$(CFN_LINT) target/deploy/$(SAM_ENV)/template.json

sam-build: sam-template $(VENV)/bin/cargo-lambda
	@rustup target list --installed | grep -qx $(LAMBDA_TARGET) || rustup target add $(LAMBDA_TARGET)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(SAM_CARGO_ENV) $(SAM) build --config-env $(SAM_ENV)

sam-deploy: sam-build
	$(SAM) deploy --config-env $(SAM_ENV)

# cargo-lambda from PyPI: a prebuilt binary wheel, and zig through the ziglang wheel. ~6 s.
# Pinned to the 1.9 line: tests/lambda-invoke-check.sh relies on how 1.9 merges the metadata
# env with --env-file (see functions/*/Cargo.toml).
$(VENV)/bin/cargo-lambda:
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/$(DEPLOY_PIP) "cargo-lambda==1.9.*"

# ~6 s of checks once the dev-profile binaries are built (`make unit` builds them); the first
# run on a clean machine also installs cargo-lambda and moto and builds the functions.
lambda-invoke-check: $(VENV)/bin/cargo-lambda $(VENV)/bin/moto_server
	VENV=$(VENV) tests/lambda-invoke-check.sh

lambda-build: $(VENV)/bin/cargo-lambda
	@rustup target list --installed | grep -qx $(LAMBDA_TARGET) || rustup target add $(LAMBDA_TARGET)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cargo lambda build --profile $(LAMBDA_PROFILE) --arm64 \
	  $(foreach b,$(LAMBDA_BINS),--bin $(b)) -p ferry-enqueue -p ferry-drain -p ferry-heartbeat
	@for b in $(LAMBDA_BINS); do \
	  f=$${CARGO_TARGET_DIR:-target}/lambda/$$b/bootstrap; \
	  test -f $$f || { echo "missing $$f"; exit 1; }; \
	  size=$$(stat -c %s $$f); \
	  stripped=$$(file -b $$f | grep -o 'not stripped\|stripped' | head -1); \
	  verdict=$$([ $$size -le $(LAMBDA_MAX_BYTES) ] && echo "within the 8 MiB goal" || echo "OVER the 8 MiB goal"); \
	  printf '%-8s %s  %9d bytes (%s MiB)  %s, %s\n' $$b "$$(file -b $$f | cut -d, -f2 | xargs)" $$size \
	    "$$(awk "BEGIN{printf \"%.2f\", $$size/1048576}")" "$$stripped" "$$verdict"; \
	done
