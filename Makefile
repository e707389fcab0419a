# The single entry point for building, running and checking the project.
# `make help` lists the targets.

GO       ?= go
BIN      := bin
PKGS     := ./...
# The default test run stays well under CI's 15-minute budget.
TEST_TIMEOUT ?= 10m

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
# `make run` is the whole local stack: the reference engine (with its embedded
# Kafka broker) starts the executor service beside it, submits a demo workload
# over gRPC and Kafka, prints a summary, and keeps both up until Ctrl-C.
# DEMO_TASKS sets the tasks per example type.
DEMO_TASKS ?= 500
run: build ## Run the reference engine and the executor with a demo workload, until Ctrl-C
	$(BIN)/devengine -executor $(BIN)/executor -demo $(DEMO_TASKS) -executor-log $(BIN)/executor.log

.PHONY: build
build: ## Build the executor service and the reference engine into bin/
	$(GO) build -trimpath -o $(BIN)/ ./cmd/executor ./cmd/devengine

.PHONY: test
test: lint ## Vet, format check, and every test with the race detector
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

.PHONY: test-deploy
test-deploy: ## Validate deploy/compose.yaml and the Kubernetes overlays offline (compose-go, kustomize, strict k8s types)
	$(GO) test -race -count=1 ./deploy/

.PHONY: test-interop
test-interop: ## The interop suite against a gRPC C-core engine, idle scenarios included (about 12 min)
	GAMELAN_INTEROP_LONG=1 $(GO) test -race -count=1 -parallel 16 -timeout 40m -run Interop -v ./test/interop/

.PHONY: test-fork
test-fork: ## Fork a copy of the repository the whole way: rename, scaffold, make test, a task to the new type
	GAMELAN_FORK_LONG=1 $(GO) test -count=1 -timeout 40m -run TestFork -v ./test/fork/

.PHONY: test-faults
# The fault scenarios (test/faults) and the bad-input and attack tables
# (test/component), long variants, each outcome appended to FAULTS_REPORT,
# then printed as RELIABILITY.md's table. About 10 minutes.
FAULTS_REPORT ?= $(CURDIR)/$(BIN)/faults-report.jsonl
test-faults: ## Fault scenarios, long variants, with their figures (RELIABILITY.md; about 10 min)
	@mkdir -p $(BIN) && rm -f $(FAULTS_REPORT)
	GAMELAN_FAULTS_LONG=1 GAMELAN_FAULTS_REPORT=$(FAULTS_REPORT) $(GO) test -race -count=1 -timeout 40m ./test/faults/...
	GAMELAN_FAULTS_LONG=1 GAMELAN_FAULTS_REPORT=$(FAULTS_REPORT) $(GO) test -race -count=1 -timeout 20m -run 'TestBadInput|TestAttack' ./test/component/
	$(GO) run ./test/faults/report $(FAULTS_REPORT)

.PHONY: test-flow
# The flow-control measurements at full length (issue 18's figures, quoted in
# BENCHMARKS.md): the rate limit's start rate on every transport, 30 s each;
# adaptive concurrency settling at a downstream's knee, 30 s; and the Kafka
# ordering modes' and idempotent producer's benchmarks. About 5 minutes.
test-flow: ## Flow control measured at full length: rate limits per transport, adaptive concurrency, Kafka ordering and idempotence (about 5 min)
	FLOW_SECONDS=30 $(GO) test -count=1 -timeout 20m -v -run TestRateLimitHoldsOnEveryTransport ./test/flow/
	ADAPTIVE_SECONDS=30 $(GO) test -count=1 -timeout 10m -v -run TestAdaptiveConcurrencySettlesNearTheDownstreamsKneeAndKeepsP99Low ./internal/app/
	$(GO) test -count=1 -timeout 10m -run '^$$' -bench BenchmarkOrdering -benchtime 3x -count 3 ./internal/adapters/kafka/
	$(GO) test -count=1 -timeout 10m -run '^$$' -bench BenchmarkProduceResults -benchtime 20000x -count 6 -benchmem ./internal/adapters/kafka/

.PHONY: scaffold
scaffold: ## Scaffold a new executor type: make scaffold NAME=currency-converter [TRANSPORT=grpc|kafka|rest]
	$(GO) run ./cmd/scaffold executor $(NAME) -transport $(or $(TRANSPORT),grpc)

.PHONY: test-race
test-race: ## Every test with the race detector, several times (flake hunt)
	$(GO) test -race -count=5 -timeout 30m $(PKGS)

# The fuzz targets, package:Target, each run alone for FUZZTIME: go test
# takes one fuzz target per invocation. Their seed corpora (testdata/fuzz)
# run as ordinary tests in `make test` too. Go 1.26's fuzzing coordinator
# may end a run that found nothing with a bare "context deadline exceeded"
# when the time is up while a worker is busy (go.dev/issue/75804, fixed in
# Go 1.27): that run is reported and not counted as a failure; any other
# failure, a failing input above all, stops the target.
FUZZTIME ?= 10s
FUZZ_TARGETS := \
	./internal/adapters/kafka:FuzzDecodeTask \
	./internal/adapters/kafka:FuzzTaskRecord \
	./internal/adapters/grpc:FuzzDecodeTaskFrame \
	./internal/adapters/grpc:FuzzDecodeEngineMessage \
	./internal/adapters/grpc:FuzzPushRequest \
	./internal/adapters/grpc:FuzzStructConversion \
	./internal/adapters/rest:FuzzIntakeRequest \
	./internal/security:FuzzVerify \
	./internal/security:FuzzVerifyMutation \
	./internal/security:FuzzBearerToken \
	./internal/config:FuzzValue \
	./internal/config:FuzzLoad

.PHONY: test-fuzz
test-fuzz: ## Fuzz every decoder of outside input, FUZZTIME (10s) per target, stopping at the first failure
	@for target in $(FUZZ_TARGETS); do \
	  pkg=$${target%%:*}; name=$${target##*:}; \
	  echo "== $$name ($$pkg), $(FUZZTIME)"; \
	  out=$$($(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg 2>&1); rc=$$?; \
	  echo "$$out"; \
	  [ $$rc -eq 0 ] && continue; \
	  if echo "$$out" | grep -qx '    context deadline exceeded' && \
	     ! echo "$$out" | grep -q -e 'Failing input written' -e "^    --- FAIL: $$name/"; then \
	    echo "$$name: the fuzzing deadline raced a worker (go.dev/issue/75804), no failing input: not a failure"; continue; \
	  fi; \
	  exit 1; \
	done

.PHONY: lint
lint: ## go vet and gofmt
	$(GO) vet $(PKGS)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "not gofmt-formatted:"; echo "$$unformatted"; exit 1; fi

.PHONY: bench
# The load harness (cmd/bench) plays the engine and drives the executor
# binary as a process of its own, open loop, every figure beside a bare
# baseline of the same shape from the same run: BENCHMARKS.md holds the
# latest table. BENCH_FLAGS passes flags, e.g. BENCH_FLAGS="-run latency/push".
BENCH_FLAGS ?=
bench: build ## The whole benchmark table, each figure beside its same-run baseline (about 7 min; BENCHMARKS.md)
	$(GO) build -o $(BIN)/ ./cmd/bench
	$(BIN)/bench -executor $(BIN)/executor -devengine $(BIN)/devengine $(BENCH_FLAGS)

.PHONY: bench-smoke
bench-smoke: build ## A short benchmark run (under 3 min) that fails when a ratio misses its target by more than the margin
	$(GO) build -o $(BIN)/ ./cmd/bench
	$(BIN)/bench -smoke -executor $(BIN)/executor -devengine $(BIN)/devengine $(BENCH_FLAGS)

# Generated code is committed. protoc comes from Debian's protobuf-compiler;
# the Go plugins are built at the versions pinned in go.mod's tool block.
# Code is generated into bin/gen first and swapped in only when protoc
# succeeded, so that a failed generation never leaves a tree that does not
# build. The module path is go.mod's, so a renamed module needs no edit here.
PROTOC   ?= protoc
PROTO_INCLUDE ?= /usr/include
MODULE   := $(shell $(GO) list -m)
GENERATED := cmd/executor/service/wire_gen.go internal/gen README.md

.PHONY: generate
generate: generate-proto generate-wire generate-docs ## Regenerate committed code (protobuf, then Wire) and the README's variable table

.PHONY: generate-proto
generate-proto: ## Regenerate the protobuf code in internal/gen (needs protoc)
	@command -v $(PROTOC) >/dev/null 2>&1 || { echo "make generate-proto needs protoc (Debian: apt-get install protobuf-compiler); nothing was changed"; exit 1; }
	$(GO) build -o $(BIN)/tools/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
	rm -rf $(BIN)/gen && mkdir -p $(BIN)/gen
	$(PROTOC) -I proto -I $(PROTO_INCLUDE) \
	  --plugin=protoc-gen-go=$(BIN)/tools/protoc-gen-go --plugin=protoc-gen-go-grpc=$(BIN)/tools/protoc-gen-go-grpc \
	  --go_out=$(BIN)/gen --go_opt=module=$(MODULE) \
	  --go-grpc_out=$(BIN)/gen --go-grpc_opt=module=$(MODULE) \
	  $$(find proto -name '*.proto' | sort)
	rm -rf internal/gen && mv $(BIN)/gen/internal/gen internal/gen && rm -rf $(BIN)/gen

.PHONY: generate-wire
generate-wire: ## Regenerate Wire's injectors (needs nothing but Go)
	$(GO) tool wire gen ./cmd/executor/service

.PHONY: generate-docs
generate-docs: ## Rewrite the README's table of configuration variables
	$(GO) test -count=1 -run TestREADMEConfigurationTableIsCurrent ./cmd/executor/service -update

.PHONY: check-generate
check-generate: generate ## Fail if generated code differs from what is committed
	@test -z "$$(git status --porcelain -- $(GENERATED))" || \
	  (git status --porcelain -- $(GENERATED); echo "generated code is stale: run 'make generate' and commit" && exit 1)

# The images' binaries are built by scripts/build-static.sh alone: both
# Dockerfiles run it, and images-check runs it outside Docker (no Docker
# engine in CI), then test/images checks the binaries are static, built
# with the script's flags, print the stamp given below with -version, and
# that the Docker context (less .dockerignore) builds.
IMAGES_BIN        := $(BIN)/images
IMAGES_VERSION    ?= 0.0.0-images-check
IMAGES_COMMIT     ?= 0123456789abcdef0123456789abcdef01234567
IMAGES_BUILD_DATE ?= 2026-01-02T03:04:05Z
IMAGES_STAMP      := VERSION=$(IMAGES_VERSION) COMMIT=$(IMAGES_COMMIT) BUILD_DATE=$(IMAGES_BUILD_DATE)

.PHONY: images-check
images-check: ## Build both images' binaries with the Dockerfiles' script, check they are static and stamped (no Docker needed)
	$(IMAGES_STAMP) sh scripts/build-static.sh ./cmd/executor $(IMAGES_BIN)/executor
	$(IMAGES_STAMP) sh scripts/build-static.sh ./cmd/devengine $(IMAGES_BIN)/devengine
	GAMELAN_IMAGES_BIN=$(CURDIR)/$(IMAGES_BIN) GAMELAN_IMAGES_VERSION=$(IMAGES_VERSION) \
	  GAMELAN_IMAGES_COMMIT=$(IMAGES_COMMIT) GAMELAN_IMAGES_BUILD_DATE=$(IMAGES_BUILD_DATE) \
	  $(GO) test -count=1 -v ./test/images/

# docker builds both images, stamped with the checkout's version and commit
# and one build date (taken once, so that both images carry the same).
DOCKER_VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
DOCKER_COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
ifndef DOCKER_BUILD_DATE
DOCKER_BUILD_DATE := $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
endif
DOCKER_ARGS = --build-arg VERSION=$(DOCKER_VERSION) --build-arg COMMIT=$(DOCKER_COMMIT) --build-arg BUILD_DATE=$(DOCKER_BUILD_DATE)

.PHONY: docker
docker: ## Build the executor's and the reference engine's images (needs a Docker engine)
	docker build $(DOCKER_ARGS) -t gamelan-executor:$(DOCKER_VERSION) .
	docker build $(DOCKER_ARGS) -f devengine.Dockerfile -t gamelan-devengine:$(DOCKER_VERSION) .

.PHONY: clean
clean: ## Remove build output
	rm -rf $(BIN)
