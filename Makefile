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
	$(GO) test -run='^$$' -fuzz=FuzzRestore -fuzztime=$(FUZZTIME) ./fsm/
	$(GO) test -run='^$$' -fuzz=FuzzRequests -fuzztime=$(FUZZTIME) ./api/server/

clean:
	rm -rf bin

## image: build the static binary and the FROM-scratch image IMAGE
## (default ordinal:local); see deploy/Dockerfile.
IMAGE   ?= ordinal:local
# Compose v2 when the docker plugin works, else v1's docker-compose. Both
# are evaluated only by the targets that use them.
COMPOSE ?= $(shell if docker compose version >/dev/null 2>&1; then echo 'docker compose'; else echo docker-compose; fi)
COMPOSE_PROJECT ?= ordinal
COMPOSE_WAIT    ?= 90
COMPOSE_CMD      = ORDINAL_IMAGE='$(IMAGE)' $(COMPOSE) -f deploy/docker-compose.yml -p $(COMPOSE_PROJECT)

.PHONY: image compose-up compose-down

image: build
	@ctx=$$(mktemp -d) && trap 'rm -rf "$$ctx"' EXIT && \
	cp $(BIN) "$$ctx/ordinal" && mkdir "$$ctx/data" && \
	echo "docker build -f deploy/Dockerfile -t $(IMAGE) (context: $(BIN) and an empty data/)" && \
	docker build -q -f deploy/Dockerfile -t '$(IMAGE)' "$$ctx"

## compose-up: start the three-node cluster of deploy/docker-compose.yml and
## wait until every node is healthy; node1 answers on 127.0.0.1:34904.
compose-up: image
	$(COMPOSE_CMD) up -d
	@deadline=$$(( $$(date +%s) + $(COMPOSE_WAIT) )); \
	ids=$$($(COMPOSE_CMD) ps -q); \
	[ -n "$$ids" ] || { echo "no containers in project $(COMPOSE_PROJECT)"; exit 1; }; \
	printf 'waiting for the nodes to be healthy'; \
	while :; do \
		states=$$(docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' $$ids) || exit 1; \
		if ! echo "$$states" | grep -qv ' running healthy$$'; then echo; echo "$$states"; break; fi; \
		if echo "$$states" | grep -qE ' (exited|dead) ' || [ $$(date +%s) -ge $$deadline ]; then \
			echo; echo "$$states"; echo "not healthy within $(COMPOSE_WAIT)s; see: $(COMPOSE_CMD) logs"; exit 1; \
		fi; \
		printf .; sleep 1; \
	done

## compose-down: stop and remove the cluster; VOLUMES=1 deletes its data too.
compose-down:
	$(COMPOSE_CMD) down --remove-orphans $(if $(VOLUMES),-v)

## bench: on this machine (loopback only), start a 3-node cluster, the no-op
## ceiling server and etcd, run every benchmark interleaved, measure
## failover, and write the results into BENCHMARKS.md (about 8 minutes;
## needs etcd-server). Knobs: see bench/run.sh.
.PHONY: bench
bench:
	bash bench/run.sh
