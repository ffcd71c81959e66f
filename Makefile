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
## ceiling server, etcd and 3 ordinal nodes on that etcd, run every benchmark
## interleaved, measure failover, and write the results into BENCHMARKS.md (about 7 minutes;
## needs etcd-server). Knobs: see bench/run.sh.
.PHONY: bench
bench:
	bash bench/run.sh

## torture: the network-fault scenarios of e2e/ run long, with random fault
## schedules, over several seeds (ORDINAL_TORTURE_DURATION per seed, default
## 30s; ORDINAL_TORTURE_SEEDS, default 3; ORDINAL_SEED=n replays one seed;
## failures leave porcupine's visualisation and the history in
## ORDINAL_ARTIFACTS), then the other e2e tests (process clusters under
## kill -9 and SIGSTOP). TORTURE_RUN narrows the scenarios, TORTURE_FLAGS
## adds go test flags (e.g. -v).
TORTURE_RUN   ?= Torture|Partition
TORTURE_FLAGS ?=
.PHONY: torture
torture:
	ORDINAL_TORTURE=1 ORDINAL_TEST_LOG=$${ORDINAL_TEST_LOG:-error} \
		$(GO) test -race -count=1 -timeout 30m $(TORTURE_FLAGS) -run '$(TORTURE_RUN)' ./e2e/
	ORDINAL_TORTURE=1 $(GO) test -race -count=1 -timeout 30m $(TORTURE_FLAGS) -skip 'Torture|Partition' ./e2e/

## etcd-image: package Debian's etcd (ETCD_BIN, default /usr/bin/etcd from
## etcd-server) and the shared libraries it links against into the
## FROM-scratch image ETCD_LOCAL_IMAGE (default ordinal-etcd:local), for
## machines that cannot pull the official image; see deploy/Dockerfile.etcd.
## compose-etcd-up / compose-etcd-down: the etcd-backed deployment of
## deploy/docker-compose.etcd.yml (etcd plus three stateless nodes), with the
## etcd image ETCD_IMAGE (default: the official one; ETCD_IMAGE=ordinal-etcd:local
## after make etcd-image).
ETCD_BIN             ?= /usr/bin/etcd
ETCD_LOCAL_IMAGE     ?= ordinal-etcd:local
COMPOSE_ETCD_PROJECT ?= ordinal-etcd
COMPOSE_ETCD_CMD      = ORDINAL_IMAGE='$(IMAGE)' $(if $(ETCD_IMAGE),ETCD_IMAGE='$(ETCD_IMAGE)') $(COMPOSE) -f deploy/docker-compose.etcd.yml -p $(COMPOSE_ETCD_PROJECT)

.PHONY: etcd-image compose-etcd-up compose-etcd-down

etcd-image:
	@test -x '$(ETCD_BIN)' || { echo "$(ETCD_BIN) missing: apt-get install -y etcd-server, or set ETCD_BIN"; exit 1; }
	@ctx=$$(mktemp -d) && trap 'rm -rf "$$ctx"' EXIT && \
	mkdir -p "$$ctx/rootfs/usr/local/bin" "$$ctx/etcd-data" && \
	cp '$(ETCD_BIN)' "$$ctx/rootfs/usr/local/bin/etcd" && \
	libs=$$(ldd '$(ETCD_BIN)' 2>/dev/null | grep -o '/[^ ]*' || true) && \
	for lib in $$libs; do mkdir -p "$$ctx/rootfs$$(dirname "$$lib")" && cp -L "$$lib" "$$ctx/rootfs$$lib" || exit 1; done && \
	echo "docker build -f deploy/Dockerfile.etcd -t $(ETCD_LOCAL_IMAGE) (context: $(ETCD_BIN) and $${libs:-no libraries, static})" && \
	docker build -q -f deploy/Dockerfile.etcd -t '$(ETCD_LOCAL_IMAGE)' "$$ctx"

compose-etcd-up: image
	$(COMPOSE_ETCD_CMD) up -d
	@deadline=$$(( $$(date +%s) + $(COMPOSE_WAIT) )); \
	ids=$$($(COMPOSE_ETCD_CMD) ps -q node1 node2 node3); \
	[ -n "$$ids" ] || { echo "no ordinal containers in project $(COMPOSE_ETCD_PROJECT)"; exit 1; }; \
	printf 'waiting for the nodes to be healthy'; \
	while :; do \
		states=$$(docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' $$ids) || exit 1; \
		if ! echo "$$states" | grep -qv ' running healthy$$'; then echo; echo "$$states"; break; fi; \
		if echo "$$states" | grep -qE ' (exited|dead) ' || [ $$(date +%s) -ge $$deadline ]; then \
			echo; echo "$$states"; echo "not healthy within $(COMPOSE_WAIT)s; see: $(COMPOSE_ETCD_CMD) logs"; exit 1; \
		fi; \
		printf .; sleep 1; \
	done

compose-etcd-down:
	$(COMPOSE_ETCD_CMD) down --remove-orphans $(if $(VOLUMES),-v)
