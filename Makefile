# Two commands do all the set-up on a fresh machine:
#   make demo   - install into .venv, then run the demo
#   make test   - install into .venv (with dev tools), then run the test suite
# Everything is installed with constraints.txt, which pins the CPU build of torch: an unpinned
# torch would pull several GB of CUDA packages.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.splitwire-installed
EXTRAS ?= dev,hf,plot,pretrained
# Folders installed as splitwire.<role> (pyproject.toml's package-dir).
ROLES := protocol partitioner benchmarks cloud edge corrector netem

.PHONY: demo test lint proto bench clean system-deps images images-smoke

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "splitwire needs Python >= 3.11 ($(PYTHON) is older)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first and alone, so nothing else can choose its build.
	$(PIP) install --quiet -c constraints.txt torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	touch $(STAMP)

# Debian packages the runtime tests need, installed only when missing: the MQTT broker
# (mosquitto, with mosquitto_passwd), the gRPC load balancer (nginx-light: grpc_pass) and
# docker-compose (only its offline `config` check of deploy/compose; no engine is needed).
# Debian's nginx starts a default site on port 80 where the service manager lets it: stopped,
# the tests run their own nginx on loopback. kubectl (kustomize) is not in Debian bookworm.
system-deps:
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1 || \
		missing="$$missing docker-compose"; \
	if [ -z "$$missing" ]; then \
		echo "system packages: mosquitto, nginx, docker-compose present; nothing installed, no service touched" >&2; \
	else \
		echo "system packages: installing$$missing with apt-get (needs root or sudo)$$(case "$$missing" in *nginx*) \
			echo '; then stopping the nginx service Debian starts on port 80 (the tests run their own nginx on loopback)';; esac)" >&2; \
	fi; \
	[ -z "$$missing" ] || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
		case "$$missing" in *nginx*) \
			$$SUDO service nginx stop >/dev/null 2>&1 || true;; esac; }

# The end-to-end demo: plan ResNet-18 for an edge 4x slower than this machine on three links
# (with its Pareto plot, the layer3 split shipped too, and the whole model as the edge's local
# fallback), then deploy/demo.sh packs it for each side (out/demo/resnet18-cloud: the tails,
# out/demo/resnet18-edge: the heads and the whole model) and a tail and an edge agent on loopback,
# each from its own pack, stream 300 frames through that split; the agent prints its summary.
# The plan is signed with a key made once (out/demo/plans.key), and both runtimes refuse a plan
# directory that key did not sign (a .pt2 half can run code when it loads).
demo: $(STAMP)
	mkdir -p out/demo
	[ -f out/demo/plans.key ] || $(VENV)/bin/splitwire keygen --out out/demo/plans
	$(VENV)/bin/splitwire plan --model zoo:resnet18 --input-shape 1,3,224,224 --edge-slowdown 4 \
		--link wifi --link lte --link 3g --calibration 2 --repeats 5 --ship c0050 \
		--out out/demo/resnet18 --plot out/demo/resnet18.png --sign-key out/demo/plans.key
	SPLITWIRE=$(VENV)/bin/splitwire PLAN_PUBLIC_KEY=out/demo/plans.pub \
		deploy/demo.sh out/demo/resnet18 300 max c0050 int8+zstd1

# `bin/pytest`, not `python -m pytest`: -m would put the repository root on sys.path, where
# the role folders look like top-level packages (`protocol`, ...) that are not installed.
# Two passes: most tests on both cores, then the `timed` ones (agents, links and tails against
# the wall clock) alone, so that a neighbour's load cannot make them late.
test: $(STAMP) system-deps
	$(VENV)/bin/pytest -q -n 2 --dist loadfile -m "not timed" --durations=5
	$(VENV)/bin/pytest -q -m timed --durations=10

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@# mypy cannot follow the editable install's import hook: give it the installed layout as a
	@# tree of links (splitwire/protocol -> protocol/, ...).
	rm -rf build/typecheck && mkdir -p build/typecheck/splitwire
	ln -s $(CURDIR)/splitwire/*.py build/typecheck/splitwire/
	for role in $(ROLES); do [ ! -d $$role ] || ln -s $(CURDIR)/$$role build/typecheck/splitwire/$$role; done
	cd build/typecheck && $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml -p splitwire

# Regenerate protocol/splitwire_pb2*.py from protocol/splitwire.proto.
proto: $(STAMP)
	$(PY) -m splitwire.protocol.codegen

bench: $(STAMP)
	$(VENV)/bin/splitwire bench codec
	$(VENV)/bin/splitwire bench pipeline

# Container images (deploy/docker/README.md): splitwire:VERSION and :latest, built without a
# registry (a debootstrap base); then the tail and an edge agent as containers on loopback.
images:
	deploy/docker/build.sh

images-smoke: $(STAMP)
	deploy/docker/smoke.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
