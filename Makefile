# ordinal: make run starts a node, make test runs every test.
GO        ?= go
BIN       := bin/ordinal
MODULE    := github.com/ordinal-dev/ordinal
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X $(MODULE)/internal/version.Version=$(VERSION)
PROTOS    := $(shell find api/proto -name '*.proto' | sort)
TESTFLAGS ?= -race -count=1 -timeout 20m

.PHONY: all build run test lint proto proto-check fuzz clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/ordinal

## run: build and start a single-node cluster with its data in ./data.
run: build
	$(BIN) serve

## test: lint, check generated code, then every test with the race detector.
test: lint proto-check
	$(GO) test $(TESTFLAGS) ./...

lint:
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## proto: regenerate the Go code in api/ from the .proto files.
proto:
	@command -v protoc >/dev/null || { echo "protoc missing: apt-get install -y protobuf-compiler"; exit 1; }
	protoc -I api/proto \
		--plugin=protoc-gen-go="$$($(GO) tool -n protoc-gen-go)" \
		--plugin=protoc-gen-go-grpc="$$($(GO) tool -n protoc-gen-go-grpc)" \
		--go_out=. --go_opt=module=$(MODULE) \
		--go-grpc_out=. --go-grpc_opt=module=$(MODULE) \
		$(PROTOS)

## proto-check: fail when the committed generated code is stale.
proto-check:
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	cp -r api $$tmp/api; \
	$(MAKE) --no-print-directory proto >/dev/null; \
	if ! diff -r $$tmp/api api >/dev/null; then \
		diff -r $$tmp/api api | head -20; rm -rf api; cp -r $$tmp/api api; \
		echo "generated code in api/ is stale: run 'make proto' and commit"; exit 1; \
	fi

## fuzz: run each fuzz target for FUZZTIME (default 30s).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzDecode -fuzztime=$(FUZZTIME) ./fsm/
	$(GO) test -run='^$$' -fuzz=FuzzApply -fuzztime=$(FUZZTIME) ./fsm/

clean:
	rm -rf bin
