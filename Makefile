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

.PHONY: test-interop
test-interop: ## The interop suite against a gRPC C-core engine, idle scenarios included (about 12 min)
	GAMELAN_INTEROP_LONG=1 $(GO) test -race -count=1 -parallel 16 -timeout 40m -run Interop -v ./test/interop/

.PHONY: test-race
test-race: ## Every test with the race detector, several times (flake hunt)
	$(GO) test -race -count=5 -timeout 30m $(PKGS)

.PHONY: lint
lint: ## go vet and gofmt
	$(GO) vet $(PKGS)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "not gofmt-formatted:"; echo "$$unformatted"; exit 1; fi

.PHONY: bench
bench: ## Benchmarks: the runtime core and the service over gRPC, each beside its baseline
	$(GO) test -run '^$$' -bench . -benchmem ./internal/app/
	$(GO) test -run '^$$' -bench . -benchtime 20000x -count 3 ./test/load/

# Generated code is committed. protoc comes from Debian's protobuf-compiler;
# the Go plugins are built at the versions pinned in go.mod's tool block.
PROTOC   ?= protoc
PROTO_INCLUDE ?= /usr/include
GENERATED := cmd/executor/service/wire_gen.go internal/gen

.PHONY: generate
generate: ## Regenerate committed code (protobuf, Wire)
	$(GO) build -o $(BIN)/tools/ google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
	rm -rf internal/gen
	$(PROTOC) -I proto -I $(PROTO_INCLUDE) \
	  --plugin=protoc-gen-go=$(BIN)/tools/protoc-gen-go --plugin=protoc-gen-go-grpc=$(BIN)/tools/protoc-gen-go-grpc \
	  --go_out=. --go_opt=module=github.com/gamelan-go/executor \
	  --go-grpc_out=. --go-grpc_opt=module=github.com/gamelan-go/executor \
	  $$(find proto -name '*.proto' | sort)
	$(GO) tool wire gen ./cmd/executor/service

.PHONY: check-generate
check-generate: generate ## Fail if generated code differs from what is committed
	@test -z "$$(git status --porcelain -- $(GENERATED))" || \
	  (git status --porcelain -- $(GENERATED); echo "generated code is stale: run 'make generate' and commit" && exit 1)

.PHONY: docker
docker: ## Build the container image (needs a Docker engine)
	docker build -t gamelan-executor:dev .

.PHONY: clean
clean: ## Remove build output
	rm -rf $(BIN)
