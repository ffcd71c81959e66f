# ordinal: make run starts a node, make test runs every test.
GO        ?= go
BIN       := bin/ordinal
BENCH_BIN := bin/ordinal-bench
MODULE    := github.com/ordinal-dev/ordinal
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X $(MODULE)/internal/version.Version=$(VERSION)
PROTOS    := $(shell find api/proto -name '*.proto' | sort)
# The race detector needs cgo, which the go command turns off where there
# is no C compiler: there the tests run without it (make test says so).
RACE       = $(if $(filter 1,$(shell $(GO) env CGO_ENABLED 2>/dev/null)),-race)
TESTFLAGS ?= $(RACE) -count=1 -timeout 20m

.PHONY: all build build-bench run test lint proto proto-check proto-lint proto-breaking proto-baseline fuzz clean

all: build

## build: the binary that serves and talks to nodes, bin/ordinal.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/ordinal

## build-bench: the load generator, bin/ordinal-bench (ordinal-bench run,
## serve-noop, failover, compare), a binary of its own so that the one that
## serves carries neither it nor failover's SIGKILL of a PID it is given.
build-bench:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BENCH_BIN) ./cmd/ordinal-bench

## run: build and start a single-node cluster with its data in ./data.
run: build
	$(BIN) serve

## test: lint, check generated code, then every test with the race detector
## (through internal/tools/testsummary: go test's own output, then one line
## naming the tests that skipped and what they need, e.g. Docker).
test: lint proto-check
	$(if $(RACE),,@echo "no C compiler (go env CGO_ENABLED is 0): the race detector is off")
	GO='$(GO)' $(GO) run ./internal/tools/testsummary $(TESTFLAGS) ./...

## lint: gofmt, go vet (the main module and tools/protogen) and buf lint
## on the protos (proto-lint).
lint: proto-lint
	@out=$$(gofmt -l .); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -C tools/protogen ./...

## proto-lint: buf lint over api/proto, as buf.yaml (the repository's root)
## configures it: buf's STANDARD rules; Layotto's runtime.proto is exempt
## from the three naming rules its names break.
## proto-breaking: buf breaking with the FILE rules: the protos must keep
## what the last release defined, kept as a buf image in api/release/
## (PROTO_BASELINE, the one file there, named after its release; no git
## tag needed).
## proto-baseline RELEASE=vX.Y.Z: when a release is cut, replace the image
## in api/release/ with the protos as they are, as RELEASE.binpb
## (api/DESIGN.md). buf runs with Go alone: go tool with tools/buf/go.mod,
## a module of its own, so buf's dependencies stay out of go.mod.
BUF            = $(GO) tool -modfile=tools/buf/go.mod buf
PROTO_BASELINE ?= $(wildcard api/release/*.binpb)
proto-lint:
	$(BUF) lint
proto-breaking:
	@[ $(words $(PROTO_BASELINE)) = 1 ] || { echo "proto-breaking: want one buf image in api/release/, found: $(or $(PROTO_BASELINE),none)"; exit 1; }
	$(BUF) breaking --against '$(PROTO_BASELINE)'
proto-baseline:
	@case '$(RELEASE)' in v[0-9]*.[0-9]*.[0-9]*) ;; *) echo "usage: make proto-baseline RELEASE=vX.Y.Z (the release being cut)"; exit 1;; esac
	rm -f api/release/*.binpb
	$(BUF) build --exclude-source-info -o 'api/release/$(RELEASE).binpb'

## proto: regenerate the Go code in api/ from the .proto files, with Go
## alone: tools/protogen compiles them with protocompile and runs the
## protoc-gen-go and protoc-gen-go-grpc of go.mod's tool lines, as protoc
## would (the headers keep naming protoc v3.21.12, which first generated
## them; PROTOC_VERSION changes that).
PROTOC_VERSION ?= 3.21.12
# $(call protogen,OUTPUT DIRECTORY)
define protogen
gen=$$($(GO) tool -n protoc-gen-go) && grpc=$$($(GO) tool -n protoc-gen-go-grpc) && \
	$(GO) run -C tools/protogen . -I '$(CURDIR)/api/proto' -out $(1) -opt module=$(MODULE) \
		-protoc-version $(PROTOC_VERSION) -plugin "$$gen" -plugin "$$grpc" \
		$(addprefix '$(CURDIR)'/,$(PROTOS))
endef
proto:
	@$(call protogen,'$(CURDIR)')

## proto-check: fail when the committed generated code is stale: generate
## into a temporary directory and compare, leaving api/ alone; and fail on
## a breaking change to the protos (proto-breaking).
proto-check: proto-breaking
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT || exit 1; \
	$(call protogen,"$$tmp") || exit 1; \
	(cd "$$tmp" && find api -name '*.pb.go' | sort) > "$$tmp/generated" && find api -name '*.pb.go' | sort > "$$tmp/committed" || exit 1; \
	stale=0; \
	if ! cmp -s "$$tmp/committed" "$$tmp/generated"; then \
		echo "generated files differ (<: committed only, >: generated only):"; diff "$$tmp/committed" "$$tmp/generated"; stale=1; \
	fi; \
	for f in $$(cat "$$tmp/generated"); do \
		[ -f "$$f" ] || continue; \
		if ! cmp -s "$$tmp/$$f" "$$f"; then diff -u "$$f" "$$tmp/$$f" | head -20; stale=1; fi; \
	done; \
	if [ $$stale = 1 ]; then echo "generated code in api/ is stale: run 'make proto' and commit"; exit 1; fi

## fuzz: run each fuzz target for FUZZTIME (default 30s).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run='^$$' -fuzz=FuzzDecode -fuzztime=$(FUZZTIME) ./fsm/
	$(GO) test -run='^$$' -fuzz=FuzzApply -fuzztime=$(FUZZTIME) ./fsm/
	$(GO) test -run='^$$' -fuzz=FuzzRestore -fuzztime=$(FUZZTIME) ./fsm/
	$(GO) test -run='^$$' -fuzz=FuzzRequests -fuzztime=$(FUZZTIME) ./api/server/
	$(GO) test -run='^$$' -fuzz=FuzzCluster -fuzztime=$(FUZZTIME) ./api/server/
	$(GO) test -run='^$$' -fuzz=FuzzLenientUnmarshal -fuzztime=$(FUZZTIME) ./internal/grpccodec/

clean:
	rm -rf bin $(DIST)

## release: what a release ships, in DIST (dist/): for each of
## RELEASE_PLATFORMS (linux/amd64 linux/arm64) a static ordinal stamped with
## VERSION, packed with LICENSE, README.md and CHANGELOG.md as
## ordinal-VERSION-OS-ARCH.tar.gz, and SHA256SUMS over the archives (check
## with: cd dist && sha256sum -c SHA256SUMS). Only ordinal ships:
## ordinal-bench is a development tool, built from source (make build-bench).
## The archives are reproducible from the same commit and Go release:
## -trimpath, no cgo, entries owned by 0:0 and dated by the last commit
## (SOURCE_DATE_EPOCH), gzip without a timestamp.
RELEASE_PLATFORMS ?= linux/amd64 linux/arm64
DIST              ?= dist
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

.PHONY: release
release:
	@case '$(VERSION)' in *dirty*) echo "warning: VERSION $(VERSION): the tree has uncommitted changes";; dev) echo "warning: VERSION dev: no git describe; set VERSION";; esac
	rm -rf '$(DIST)' && mkdir -p '$(DIST)'
	@set -e; for p in $(RELEASE_PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; name=ordinal-$(VERSION)-$$os-$$arch; dir='$(DIST)'/$$name; \
		echo "$$name.tar.gz: CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath ./cmd/ordinal"; \
		mkdir -p "$$dir"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o "$$dir/ordinal" ./cmd/ordinal; \
		if [ "$$p" = "$$($(GO) env GOHOSTOS)/$$($(GO) env GOHOSTARCH)" ]; then \
			v=$$("$$dir/ordinal" version) && echo "  $$v" && case "$$v" in "ordinal $(VERSION) ("*) ;; *) false;; esac; \
		else grep -qaF -- '$(VERSION)' "$$dir/ordinal"; fi || \
			{ echo "$$dir/ordinal: not stamped with version $(VERSION)"; exit 1; }; \
		cp LICENSE README.md CHANGELOG.md "$$dir/"; \
		tar -C '$(DIST)' --sort=name --owner=0 --group=0 --numeric-owner --mode=u+rw,go+r,go-w \
			--mtime=@$(SOURCE_DATE_EPOCH) -cf - "$$name" | gzip -9n > "$$dir.tar.gz"; \
		rm -rf "$$dir"; \
	done
	cd '$(DIST)' && sha256sum *.tar.gz > SHA256SUMS && cat SHA256SUMS

## image: build the static binary and the FROM-scratch image IMAGE
## (default ordinal:local), labelled with VERSION and the git REVISION
## (org.opencontainers.image.*); see deploy/Dockerfile.
IMAGE    ?= ordinal:local
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# Compose v2 when the docker plugin works, else v1's docker-compose. Both
# are evaluated only by the targets that use them.
COMPOSE ?= $(shell if docker compose version >/dev/null 2>&1; then echo 'docker compose'; else echo docker-compose; fi)
COMPOSE_PROJECT ?= ordinal
COMPOSE_WAIT    ?= 90
COMPOSE_CMD      = ORDINAL_IMAGE='$(IMAGE)' $(COMPOSE) -f deploy/docker-compose.yml -p $(COMPOSE_PROJECT)
# The compose clusters run with TLS and authorization on. compose-up and
# compose-etcd-up copy what a client on this machine needs out of the
# project's certs volume into COMPOSE_CERTS (gitignored): the CA of the
# nodes' server certificates and the admin's client certificate and key.
COMPOSE_CERTS      ?= deploy/certs
COMPOSE_CERT_FILES  = server-ca.pem admin-client.pem admin-client-key.pem
COMPOSE_TLS_FLAGS   = --tls-ca-file $(COMPOSE_CERTS)/server-ca.pem --tls-cert-file $(COMPOSE_CERTS)/admin-client.pem --tls-key-file $(COMPOSE_CERTS)/admin-client-key.pem

.PHONY: image compose-up compose-down

image: build
	@ctx=$$(mktemp -d) && trap 'rm -rf "$$ctx"' EXIT && \
	cp $(BIN) "$$ctx/ordinal" && mkdir "$$ctx/data" && \
	echo "docker build -f deploy/Dockerfile -t $(IMAGE) (context: $(BIN) and an empty data/; version $(VERSION), revision $(REVISION))" && \
	docker build -q -f deploy/Dockerfile --build-arg VERSION='$(VERSION)' --build-arg REVISION='$(REVISION)' \
		-t '$(IMAGE)' "$$ctx"

# $(call compose_copy_certs,COMPOSE COMMAND): copy COMPOSE_CERT_FILES out of
# the project's certs service, `ordinal tls init`, whose container has
# exited by now (docker cp reads the volumes of a stopped container too).
define compose_copy_certs
@id=$$($(1) ps --all --quiet certs | head -n 1); \
	[ -n "$$id" ] || { echo "no container of the certs service: it makes the certificates; see: $(1) logs certs"; exit 1; }; \
	mkdir -p -m 700 '$(COMPOSE_CERTS)' && \
	for f in $(COMPOSE_CERT_FILES); do docker cp "$$id:/certs/$$f" '$(COMPOSE_CERTS)/'"$$f" || exit 1; done; \
	echo "copied $(COMPOSE_CERT_FILES) from the certs volume to $(COMPOSE_CERTS)/"
endef

# $(call compose_wait,COMPOSE COMMAND): wait until the containers of node1,
# node2 and node3 are running and healthy, failing after COMPOSE_WAIT
# seconds or when one exits.
define compose_wait
@deadline=$$(( $$(date +%s) + $(COMPOSE_WAIT) )); \
	ids=$$($(1) ps -q node1 node2 node3); \
	[ -n "$$ids" ] || { echo "no ordinal containers in the project"; exit 1; }; \
	printf 'waiting for the nodes to be healthy'; \
	while :; do \
		states=$$(docker inspect -f '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' $$ids) || exit 1; \
		if ! echo "$$states" | grep -qv ' running healthy$$'; then echo; echo "$$states"; break; fi; \
		if echo "$$states" | grep -qE ' (exited|dead) ' || [ $$(date +%s) -ge $$deadline ]; then \
			echo; echo "$$states"; echo "not healthy within $(COMPOSE_WAIT)s; see: $(1) logs"; exit 1; \
		fi; \
		printf .; sleep 1; \
	done
endef

# $(call compose_try,COMMAND): what compose-up and compose-etcd-up end
# with: how to call the cluster from this machine, with the demo and with
# ordinal COMMAND.
define compose_try
@echo; \
	echo "TLS and authorization are on: every call needs a client certificate of the cluster's"; \
	echo "client CA, and admin calls the admin's (in $(COMPOSE_CERTS)/). Try:"; \
	echo "  $(BIN) demo -s sequencer_demo $(COMPOSE_TLS_FLAGS)"; \
	echo "  $(BIN) $(1) $(COMPOSE_TLS_FLAGS)"
endef

## compose-up: start the three-node cluster of deploy/docker-compose.yml with
## TLS and authorization on (its certs service makes the certificates first,
## on the first start only), copy the admin's client certificate and the
## servers' CA to COMPOSE_CERTS (deploy/certs), and wait until every node is
## healthy; node1 answers on 127.0.0.1:34904. It prints the command to try.
compose-up: image
	$(COMPOSE_CMD) up -d
	$(call compose_copy_certs,$(COMPOSE_CMD))
	$(call compose_wait,$(COMPOSE_CMD))
	$(call compose_try,members)

## compose-down: stop and remove the cluster, with the monitoring and grafana
## profiles' containers if they run; VOLUMES=1 deletes its data and
## certificates too (the volumes and COMPOSE_CERTS), and Prometheus's and
## Grafana's data.
compose-down:
	$(COMPOSE_CMD) --profile monitoring --profile grafana down --remove-orphans $(if $(VOLUMES),-v)
	$(if $(VOLUMES),rm -rf '$(COMPOSE_CERTS)')

## prometheus-image: package Debian's Prometheus (PROMETHEUS_BIN, default
## /usr/bin/prometheus, and PROMTOOL_BIN, /usr/bin/promtool, from apt-get
## install prometheus) and the shared libraries they link against into the
## FROM-scratch image PROMETHEUS_LOCAL_IMAGE (default ordinal-prometheus:local),
## for machines that cannot pull the official image; see
## deploy/Dockerfile.prometheus.
## compose-monitoring-up: compose-up with the monitoring profile, Prometheus
## on 127.0.0.1:9090 (PROMETHEUS_PORT) scraping the three nodes with the alert
## rules of deploy/prometheus/, image PROMETHEUS_IMAGE (default: the official
## one; PROMETHEUS_IMAGE=ordinal-prometheus:local after make prometheus-image);
## GRAFANA=1 adds the grafana profile, Grafana on 127.0.0.1:3000 (GRAFANA_PORT)
## with the dashboard of deploy/grafana/ (image GRAFANA_IMAGE, default the
## official one, which must be pulled). make compose-down stops them all.
PROMETHEUS_BIN         ?= /usr/bin/prometheus
PROMTOOL_BIN           ?= /usr/bin/promtool
PROMETHEUS_LOCAL_IMAGE ?= ordinal-prometheus:local
COMPOSE_MONITORING_CMD  = ORDINAL_IMAGE='$(IMAGE)' $(if $(PROMETHEUS_IMAGE),PROMETHEUS_IMAGE='$(PROMETHEUS_IMAGE)') \
	$(if $(GRAFANA_IMAGE),GRAFANA_IMAGE='$(GRAFANA_IMAGE)') $(COMPOSE) -f deploy/docker-compose.yml -p $(COMPOSE_PROJECT) \
	--profile monitoring $(if $(GRAFANA),--profile grafana)

.PHONY: prometheus-image compose-monitoring-up

prometheus-image:
	@test -x '$(PROMETHEUS_BIN)' || { echo "$(PROMETHEUS_BIN) missing: apt-get install -y prometheus, or set PROMETHEUS_BIN"; exit 1; }
	@ctx=$$(mktemp -d) && trap 'rm -rf "$$ctx"' EXIT && \
	mkdir -p "$$ctx/rootfs/bin" "$$ctx/rootfs/etc/prometheus" "$$ctx/prometheus-data" && \
	bins='$(PROMETHEUS_BIN)' && cp '$(PROMETHEUS_BIN)' "$$ctx/rootfs/bin/prometheus" && \
	if [ -x '$(PROMTOOL_BIN)' ]; then cp '$(PROMTOOL_BIN)' "$$ctx/rootfs/bin/promtool" && bins="$$bins $(PROMTOOL_BIN)"; fi && \
	printf '%s\n' '# Prometheus scraping itself; mount your own configuration over this file.' \
		'scrape_configs:' '  - job_name: prometheus' '    static_configs:' '      - targets: [localhost:9090]' \
		> "$$ctx/rootfs/etc/prometheus/prometheus.yml" && \
	libs=$$(for b in $$bins; do ldd "$$b" 2>/dev/null | grep -o '/[^ ]*'; done | sort -u) && \
	for lib in $$libs; do mkdir -p "$$ctx/rootfs$$(dirname "$$lib")" && cp -L "$$lib" "$$ctx/rootfs$$lib" || exit 1; done && \
	echo "docker build -f deploy/Dockerfile.prometheus -t $(PROMETHEUS_LOCAL_IMAGE) (context: $$bins and $${libs:-no libraries, static})" && \
	docker build -q -f deploy/Dockerfile.prometheus -t '$(PROMETHEUS_LOCAL_IMAGE)' "$$ctx"

compose-monitoring-up: image
	$(COMPOSE_MONITORING_CMD) up -d
	$(call compose_copy_certs,$(COMPOSE_MONITORING_CMD))
	$(call compose_wait,$(COMPOSE_MONITORING_CMD))
	$(call compose_try,members)
	@echo "Prometheus: http://127.0.0.1:$${PROMETHEUS_PORT:-9090} (alerts: /alerts, targets: /targets)"
	$(if $(GRAFANA),@echo "Grafana:    http://127.0.0.1:$${GRAFANA_PORT:-3000} (dashboard ordinal; admin/admin to edit)")

## bench: build bin/ordinal and bin/ordinal-bench, then on this machine
## (loopback only) start a 3-node cluster, the no-op ceiling server, etcd and
## 3 ordinal nodes on that etcd, run every benchmark interleaved, measure
## failover, and write the results into BENCHMARKS.md (about 15 minutes;
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

## compose-etcd-up: start deploy/docker-compose.etcd.yml, secured as
## compose-up does (etcd itself speaks plain HTTP on the project's network),
## copy the client files to COMPOSE_CERTS and wait until the nodes are healthy.
compose-etcd-up: image
	$(COMPOSE_ETCD_CMD) up -d
	$(call compose_copy_certs,$(COMPOSE_ETCD_CMD))
	$(call compose_wait,$(COMPOSE_ETCD_CMD))
	$(call compose_try,next --mode strong --addr 127.0.0.1:$${ORDINAL_PORT_3:-34924} mykey)

## compose-etcd-down: stop and remove it; VOLUMES=1 deletes etcd's data and
## the certificates too.
compose-etcd-down:
	$(COMPOSE_ETCD_CMD) down --remove-orphans $(if $(VOLUMES),-v)
	$(if $(VOLUMES),rm -rf '$(COMPOSE_CERTS)')
