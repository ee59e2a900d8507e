# The commands of the README: `make demo`, `make test` and `make serve`. Everything installs into .venv and .stack/.
PY := .venv/bin/python

.PHONY: setup setup-test setup-train train-verifier demo serve test test-unit render proto clean

setup:
	@scripts/setup

setup-test:
	@scripts/setup --test

setup-train:
	@scripts/setup --train

## Re-train the semantic cache's pair verifier (~29 min on 2 cores; the result ships in model_assets/pair_verifier).
train-verifier: setup-train
	@$(PY) scripts/train_verifier.py

## The main job: Triton (CPU profile) + Valkey + the scripted client, then everything is stopped.
demo: setup
	@$(PY) -m stack demo

## The stack in the foreground until Ctrl-C: Valkey (cache kept in .stack/data) + Triton (CPU) + the orchestrator.
## Options: make serve ARGS="--http-port 8080 --triton-url HOST:PORT --redis-url redis://..." (python -m stack up --help).
serve: setup
	@$(PY) -m stack up $(ARGS)

## The whole suite: unit, integration (real Valkey + real Triton) and end-to-end tests.
test: setup-test
	@$(PY) -m pytest -q -ra

test-unit: setup-test
	@$(PY) -m pytest -q tests/unit

render: setup
	@$(PY) scripts/render_repository.py --profile $(or $(PROFILE),cpu) --out $(or $(OUT),rendered/$(or $(PROFILE),cpu))

## Regenerate the committed gRPC stubs from orchestrator/api/proto (grpcio-tools; the import is made absolute).
PROTO_DIR := orchestrator/api/proto
proto:
	$(PY) -m grpc_tools.protoc -I $(PROTO_DIR) --python_out=$(PROTO_DIR) --pyi_out=$(PROTO_DIR) \
		--grpc_python_out=$(PROTO_DIR) $(PROTO_DIR)/orchestrator/v1/orchestrator.proto
	sed -i 's/^from orchestrator\.v1 import/from orchestrator.api.proto.orchestrator.v1 import/' \
		$(PROTO_DIR)/orchestrator/v1/orchestrator_pb2_grpc.py

clean:
	rm -rf .stack rendered
