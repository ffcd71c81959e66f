// Package deploy_test runs the Compose cluster of docker-compose.yml end to
// end, secured as make compose-up runs it: it builds the image from
// Dockerfile, starts three nodes with TLS and authorization on (the
// certificates made by the file's certs service, the client's copied out of
// its volume as make compose-up does), checks that calls without the right
// credentials are refused, takes IDs through every node while the leader is
// killed and brought back, and adds and removes a fourth node, on a client
// port of its own that the image's healthcheck follows. With the monitoring
// profile's Prometheus (an image of Debian's prometheus, made by make
// prometheus-image, unless PROMETHEUS_IMAGE names one) it checks that the
// nodes are scraped, the alert rules load and the IDs taken are counted.
//
// The test needs a Docker engine and Compose (v2 `docker compose` or v1
// `docker-compose`). Without them it skips, unless ORDINAL_REQUIRE_DOCKER=1,
// which CI sets when `docker info` works, so that the test cannot silently
// stop running there. Without a prometheus binary to package, the
// monitoring part is left out, unless ORDINAL_REQUIRE_PROMETHEUS=1.
//
// Everything it creates is named after a random project name
// (ordinal-e2e-XXXXXXXX: containers, network, volumes, the node4 container)
// or tagged ordinal-e2e:XXXXXXXX (the image), and is removed when the test
// ends, failed or not. Should a run be killed before its cleanup (go test's
// -timeout panics without running cleanups), remove the leftovers with
//
//	docker ps -aq --filter label=ordinal-e2e | xargs -r docker rm -fv
//	docker-compose -f deploy/docker-compose.yml -p ordinal-e2e-XXXXXXXX down -v
//	docker rmi ordinal-e2e:XXXXXXXX ordinal-e2e-prometheus:XXXXXXXX
package deploy_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	// requireDockerEnv turns a skip for want of Docker into a failure.
	requireDockerEnv = "ORDINAL_REQUIRE_DOCKER"

	// e2eLabel marks the containers and images the test creates outside
	// Compose, so that leftovers of a killed run can be found.
	e2eLabel = "ordinal-e2e"

	// grpcPort is the gRPC port inside every container, peerPort the peer
	// port (Raft and node-to-node calls), which is not published.
	grpcPort = 34904
	peerPort = 34905

	// node4Port is node4's client port inside its container, set through
	// ORDINAL_GRPC_ADDR, which the image's healthcheck follows.
	node4Port = 34944

	// prometheusImageEnv names a Prometheus image for the monitoring
	// profile instead of one made from Debian's prometheus binary.
	prometheusImageEnv = "PROMETHEUS_IMAGE"

	// containerCerts is where the nodes mount the certs volume, which the
	// Compose file's certs service (ordinal tls init) fills.
	containerCerts = "/certs"

	// key is the key the test takes IDs of, in the default store. STRONG
	// and WEAK IDs of one key come from one high-water mark, so all of them
	// must be distinct.
	key = "e2e"
)

// Bounds of the waits. They are generous for a loaded CI machine; a normal
// run takes a fraction of each.
const (
	buildTimeout    = 3 * time.Minute  // go build, docker build
	composeTimeout  = 2 * time.Minute  // compose up, down
	commandTimeout  = 30 * time.Second // one docker or ordinal command
	healthyTimeout  = 90 * time.Second // the cluster forming
	failoverTimeout = 30 * time.Second // a new leader taking over
	rejoinTimeout   = 60 * time.Second // a node coming back or joining
	pollInterval    = 250 * time.Millisecond
)

var services = []string{"node1", "node2", "node3"}

// The client files make compose-up copies out of the certs volume: the CA
// of the nodes' server certificates and the admin's client certificate.
var clientFiles = []string{"server-ca.pem", "admin-client.pem", "admin-client-key.pem"}

// tlsFlags returns the client TLS flags of ordinal commands that use the
// client certificate named client, from dir.
func tlsFlags(dir, client string) []string {
	return []string{
		"--tls-ca-file", filepath.Join(dir, "server-ca.pem"),
		"--tls-cert-file", filepath.Join(dir, client+"-client.pem"),
		"--tls-key-file", filepath.Join(dir, client+"-client-key.pem"),
	}
}

// TestCompose is the end-to-end test of deploy/: image, Compose file,
// healthchecks, failover, restart and membership changes, all through the
// ordinal binary as a user would drive them.
func TestCompose(t *testing.T) {
	start := time.Now()
	composeCmd := requireDocker(t)
	c := newCluster(t, composeCmd)

	step := func(format string, args ...any) {
		t.Logf("[%5.1fs] %s", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}

	step("building the binary and image %s", c.image)
	c.buildImage()

	step("starting project %s with %s, host ports %v", c.project, strings.Join(c.compose, " "), c.ports)
	c.up()
	c.waitHealthy(services...)
	step("all three nodes healthy")

	c.checkDemo()
	step("demo output as Layotto's, with the admin's client certificate copied out of the certs volume")

	if prom := c.startMonitoring(); prom != "" {
		step("started the monitoring profile's Prometheus (%s) on %s", c.prometheusImage, prom)
	}

	c.issueCerts("--node", "node4", "--client", "app")
	step("made node4's certificates and the client certificate app with the certs service")
	l := newLedger(t)
	c.checkRefusals(l)
	step("refused: plain TCP, TLS without a client certificate, a self-made admin certificate; app takes ids but may not list or remove members")

	c.rotateServerCert("node1", l)
	step("rotated node1's server certificate in the certs volume: served without a restart, and tls init still finds everything in order")

	for round := range 2 {
		for _, svc := range services {
			n := c.hostNode(svc)
			l.strong(n, c.mustNext(n, "strong", 1))
			l.weak(n, c.mustNext(n, "weak", 1))
			if round == 0 {
				l.weak(n, c.mustNext(n, "weak", 5))
			}
		}
	}
	step("took STRONG and WEAK ids through all three nodes")
	if c.prometheusURL != "" {
		c.checkMonitoring(len(l.seen))
		step("Prometheus scrapes node1..node3, evaluates the alert rules without error and counts the %d+ IDs taken", len(l.seen))
	}

	leader, term := c.leader(c.hostNode("node1"), failoverTimeout)
	step("leader is %s in term %d; killing its container", leader, term)
	c.docker(commandTimeout, "kill", c.container(leader))
	var rest []string
	for _, svc := range services {
		if svc != leader {
			rest = append(rest, svc)
		}
	}
	// The first calls after the kill may find no leader: retry those.
	for _, svc := range rest {
		n := c.hostNode(svc)
		l.strong(n, c.nextRetrying(n, "strong", 1, failoverTimeout))
		l.weak(n, c.nextRetrying(n, "weak", 1, failoverTimeout))
	}
	var newLeader string
	var newTerm uint64
	poll(t, "a new leader in a later term", failoverTimeout, func() (bool, string) {
		newLeader, newTerm = c.leader(c.hostNode(rest[0]), failoverTimeout)
		return newLeader != leader && newTerm > term, fmt.Sprintf("leader %s in term %d", newLeader, newTerm)
	})
	step("new leader %s in term %d", newLeader, newTerm)
	for range 3 {
		for _, svc := range rest {
			n := c.hostNode(svc)
			l.strong(n, c.nextRetrying(n, "strong", 1, failoverTimeout))
			l.weak(n, c.nextRetrying(n, "weak", 1, failoverTimeout))
		}
	}
	l.weak(c.hostNode(rest[0]), c.nextRetrying(c.hostNode(rest[0]), "weak", 5, failoverTimeout))
	step("took ids through %v with %s down", rest, leader)

	c.docker(commandTimeout, "start", c.container(leader))
	c.waitHealthy(leader)
	c.waitMembers(c.hostNode(leader), rejoinTimeout, services...)
	for _, svc := range services {
		n := c.hostNode(svc)
		l.strong(n, c.nextRetrying(n, "strong", 1, rejoinTimeout))
		l.weak(n, c.nextRetrying(n, "weak", 1, rejoinTimeout))
	}
	step("%s restarted and rejoined: three voters", leader)

	node4 := c.runNode4()
	c.waitMembers(c.hostNode("node1"), rejoinTimeout, "node1", "node2", "node3", "node4")
	c.waitContainerHealthy(node4.container, rejoinTimeout)
	l.strong(node4, c.nextRetrying(node4, "strong", 1, rejoinTimeout))
	l.weak(node4, c.nextRetrying(node4, "weak", 1, rejoinTimeout))
	step("node4 joined as a voter and serves ids on port %d, and the image's healthcheck follows it there", node4Port)
	c.ordinalRetrying(c.hostNode("node1"), rejoinTimeout, "remove", "node4")
	c.waitMembers(c.hostNode("node2"), rejoinTimeout, services...)
	l.strong(c.hostNode("node1"), c.nextRetrying(c.hostNode("node1"), "strong", 1, failoverTimeout))
	step("node4 removed; %d ids taken, %d of them STRONG, all unique, STRONG strictly increasing", len(l.seen), len(l.strongIDs))
}

// requireDocker returns the Compose command to use, or skips the test (fails
// it under ORDINAL_REQUIRE_DOCKER=1) when Docker or Compose is missing.
func requireDocker(t *testing.T) []string {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		reason := fmt.Sprintf(format, args...)
		if os.Getenv(requireDockerEnv) == "1" {
			t.Fatalf("%s; %s=1 requires the compose end-to-end test to run", reason, requireDockerEnv)
		}
		t.Skipf("skipping the compose end-to-end test: %s (set %s=1 to fail instead)", reason, requireDockerEnv)
	}
	if _, err := exec.LookPath("docker"); err != nil {
		unavailable("docker is not installed: %v", err)
	}
	if _, stderr, err := run(commandTimeout, nil, "docker", "info"); err != nil {
		unavailable("docker info failed, no usable Docker engine: %v: %s", err, lastLine(stderr))
	}
	// Prefer Compose v2; Debian's docker-compose (v1) works too.
	if _, _, err := run(commandTimeout, nil, "docker", "compose", "version"); err == nil {
		return []string{"docker", "compose"}
	}
	if _, _, err := run(commandTimeout, nil, "docker-compose", "version"); err == nil {
		return []string{"docker-compose"}
	}
	unavailable("neither `docker compose` nor `docker-compose` works")
	return nil
}

// cluster is one Compose project of the test.
type cluster struct {
	t       *testing.T
	compose []string // "docker compose" or "docker-compose"
	file    string   // the Compose file
	svcs    []string // its services
	project string
	image   string
	node4   string            // name of the extra container
	bin     string            // ordinal built for this machine
	ports   map[string]int    // service -> published gRPC port
	ids     map[string]string // service -> container ID
	env     []string          // environment of compose commands

	// certs holds the client files copied out of the certs volume, as
	// make compose-up copies them to deploy/certs; admin are the TLS flags
	// of the admin's certificate, which every command uses unless it says
	// otherwise.
	certs string
	admin []string

	// prometheusImage and prometheusURL are the monitoring profile's
	// Prometheus, when it runs.
	prometheusImage string
	prometheusURL   string
}

func newCluster(t *testing.T, compose []string) *cluster {
	suffix := randomSuffix(t)
	c := &cluster{
		t:       t,
		compose: compose,
		file:    "docker-compose.yml",
		svcs:    services,
		project: "ordinal-e2e-" + suffix,
		image:   "ordinal-e2e:" + suffix,
		node4:   "ordinal-e2e-" + suffix + "-node4",
		ports:   map[string]int{},
		ids:     map[string]string{},
		certs:   t.TempDir(),
	}
	c.admin = tlsFlags(c.certs, "admin")
	for i, port := range freePorts(t, len(services)) {
		c.ports[services[i]] = port
	}
	c.env = []string{"ORDINAL_IMAGE=" + c.image}
	for i, svc := range services {
		c.env = append(c.env, fmt.Sprintf("ORDINAL_PORT_%d=%d", i+1, c.ports[svc]))
	}
	return c
}

// buildImage builds ordinal for the Docker engine's platform and the image
// from it, and ordinal for this machine to drive the cluster with.
func (c *cluster) buildImage() {
	t := c.t
	platform := strings.TrimSpace(c.docker(commandTimeout, "version", "--format", "{{.Server.Os}}/{{.Server.Arch}}"))
	goos, goarch, ok := strings.Cut(platform, "/")
	if !ok {
		t.Fatalf("docker version reported platform %q, want OS/ARCH", platform)
	}
	buildContext := t.TempDir()
	if err := os.Mkdir(filepath.Join(buildContext, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	goBuild(t, filepath.Join(buildContext, "ordinal"), goos, goarch)
	if goos == runtime.GOOS && goarch == runtime.GOARCH {
		c.bin = filepath.Join(buildContext, "ordinal")
	} else {
		c.bin = filepath.Join(t.TempDir(), "ordinal")
		goBuild(t, c.bin, runtime.GOOS, runtime.GOARCH)
	}

	t.Cleanup(func() {
		if _, stderr, err := run(commandTimeout, nil, "docker", "rmi", "--force", c.image); err != nil && !strings.Contains(stderr, "No such image") {
			t.Errorf("remove image %s: %v: %s", c.image, err, stderr)
		}
	})
	c.docker(buildTimeout, "build", "--quiet", "--label", e2eLabel+"="+c.project,
		"--build-arg", "VERSION=e2e-"+c.project, "--build-arg", "REVISION=0123abcd",
		"--file", "Dockerfile", "--tag", c.image, buildContext)
	c.checkImage()
}

// checkImage checks the image's OCI labels, from the build arguments make
// image passes, and that its healthcheck names no port of its own: it
// follows ORDINAL_GRPC_ADDR, which the image sets for serve.
func (c *cluster) checkImage() {
	t := c.t
	var cfg struct {
		Labels      map[string]string
		Env         []string
		Healthcheck struct{ Test []string }
	}
	if err := json.Unmarshal([]byte(c.docker(commandTimeout, "inspect", "--format", "{{json .Config}}", c.image)), &cfg); err != nil {
		t.Fatalf("docker inspect %s: %v", c.image, err)
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.title":    "ordinal",
		"org.opencontainers.image.version":  "e2e-" + c.project,
		"org.opencontainers.image.revision": "0123abcd",
		"org.opencontainers.image.source":   "https://github.com/ordinal-dev/ordinal",
	} {
		if got := cfg.Labels[k]; got != want {
			t.Errorf("image label %s = %q, want %q", k, got, want)
		}
	}
	if cfg.Labels["org.opencontainers.image.description"] == "" {
		t.Error("image has no org.opencontainers.image.description label")
	}
	if !slices.Contains(cfg.Env, fmt.Sprintf("ORDINAL_GRPC_ADDR=0.0.0.0:%d", grpcPort)) {
		t.Errorf("image environment %v does not set ORDINAL_GRPC_ADDR=0.0.0.0:%d", cfg.Env, grpcPort)
	}
	if hc := strings.Join(cfg.Healthcheck.Test, " "); !strings.Contains(hc, "/ordinal health") || strings.Contains(hc, "--addr") {
		t.Errorf("image healthcheck %q: want /ordinal health without --addr, following ORDINAL_GRPC_ADDR", hc)
	}
}

// goBuild builds a static ordinal as make build does.
func goBuild(t *testing.T, out, goos, goarch string) {
	t.Helper()
	env := []string{"CGO_ENABLED=0", "GOOS=" + goos, "GOARCH=" + goarch}
	if _, stderr, err := run(buildTimeout, env, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "../cmd/ordinal"); err != nil {
		t.Fatalf("go build for %s/%s: %v\n%s", goos, goarch, err, stderr)
	}
}

// up starts the project, registers its removal, volumes included, notes
// each service's container, and copies the client files out of the certs
// volume as make compose-up does.
func (c *cluster) up() {
	c.t.Cleanup(c.down)
	c.composeRun(composeTimeout, "up", "--detach")
	c.copyCerts(clientFiles...)
	for _, svc := range c.svcs {
		// Compose v2's ps lists running containers only: ask while they
		// all run.
		id := strings.TrimSpace(c.composeRun(commandTimeout, "ps", "--quiet", svc))
		if id == "" || strings.Contains(id, "\n") {
			c.t.Fatalf("container of service %s: got %q, want one ID", svc, id)
		}
		c.ids[svc] = id
	}
}

// copyCerts copies files out of the certs volume into c.certs, from the
// certs service's container, which has exited (as make compose-up does).
func (c *cluster) copyCerts(files ...string) {
	c.t.Helper()
	id, _, _ := strings.Cut(strings.TrimSpace(c.composeRun(commandTimeout, "ps", "--all", "--quiet", "certs")), "\n")
	if id == "" {
		c.t.Fatal("no container of the certs service")
	}
	for _, f := range files {
		c.docker(commandTimeout, "cp", id+":"+containerCerts+"/"+f, filepath.Join(c.certs, f))
	}
}

// issueCerts runs the certs service once more, as deploy/README.md shows
// to add nodes and clients, with the tls init flags args; the client
// certificates it makes are copied out of the volume.
func (c *cluster) issueCerts(args ...string) {
	c.t.Helper()
	argv := []string{"run", "--rm", "-T", "certs", "tls", "init", "--dir", containerCerts, "--ca-key-dir", "/ca"}
	out := c.composeRun(composeTimeout, append(argv, args...)...)
	var files []string
	for i := 0; i+1 < len(args); i += 2 {
		if args[i] == "--client" {
			files = append(files, args[i+1]+"-client.pem", args[i+1]+"-client-key.pem")
		}
	}
	for _, f := range files {
		if !strings.Contains(out, f) {
			c.t.Fatalf("tls init does not report %s:\n%s", f, out)
		}
	}
	c.copyCerts(files...)
}

// checkRefusals makes the calls an attacker on the host could make, which
// the cluster must refuse: with no TLS, with TLS but no client
// certificate, and with a certificate named admin from a CA of the
// attacker's own. The client certificate app, of the cluster's client CA
// but not in --admin-names, takes ids (noted in l) but may neither list
// nor remove members.
func (c *cluster) checkRefusals(l *ledger) {
	t := c.t
	t.Helper()
	n := c.hostNode("node1")
	serverCA := []string{"--tls-ca-file", filepath.Join(c.certs, "server-ca.pem")}

	c.mustRefuse(n, "plain TCP", nil, []string{": Unavailable:", "if it serves TLS"}, nextArgs("strong", 1)...)
	c.mustRefuse(n, "TLS without a client certificate", serverCA, []string{": Unavailable:", "requires a client certificate"}, nextArgs("strong", 1)...)

	forged := t.TempDir()
	if _, stderr, err := run(commandTimeout, nil, c.bin, "tls", "init", "--dir", forged, "--client", "admin"); err != nil {
		t.Fatalf("ordinal tls init of the forged admin: %v\n%s", err, stderr)
	}
	forgedAdmin := append(slices.Clone(serverCA), "--tls-cert-file", filepath.Join(forged, "admin-client.pem"),
		"--tls-key-file", filepath.Join(forged, "admin-client-key.pem"))
	c.mustRefuse(n, "an admin certificate of another CA", forgedAdmin, []string{": Unavailable:", "refused the client certificate"}, "members", "--timeout", "5s")

	app := tlsFlags(c.certs, "app")
	stdout, stderr, err := c.ordinalAs(n, app, nextArgs("strong", 1)...)
	if err != nil {
		t.Fatalf("ordinal next with the client certificate app: %v\n%s%s", err, stdout, stderr)
	}
	l.strong(n, c.parseIDs(stdout, 1))
	for _, args := range [][]string{{"members"}, {"remove", "node3"}, {"leader", "transfer"}} {
		c.mustRefuse(n, "app, not admin", app, []string{": PermissionDenied:", "app (role ids)"}, append(args, "--timeout", "5s")...)
	}
	c.waitMembers(n, failoverTimeout, services...)
}

// rotateServerCert replaces svc's server certificate in the certs volume
// as deploy/README.md shows (tls cert create --force through the certs
// service), waits until svc serves the new one without a restart, and
// checks that the certs service, run again as compose up runs it, accepts
// the new certificate and changes nothing. The id it takes through svc
// with the new certificate is noted in l.
func (c *cluster) rotateServerCert(svc string, l *ledger) {
	t := c.t
	t.Helper()
	n := c.hostNode(svc)
	before, err := c.servedSerial(n)
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", svc, err)
	}
	startedAt := func() string {
		return strings.TrimSpace(c.docker(commandTimeout, "inspect", "--format", "{{.State.StartedAt}}", c.container(svc)))
	}
	started := startedAt()
	c.composeRun(composeTimeout, "run", "--rm", "-T", "certs", "tls", "cert", "create", "--server", "--name", svc,
		"--dns", svc+",localhost", "--ip", "127.0.0.1,::1", "--dir", containerCerts,
		"--ca", containerCerts+"/server-ca.pem", "--ca-key", "/ca/server-ca-key.pem", "--force")
	poll(t, svc+" to serve its new certificate", failoverTimeout, func() (bool, string) {
		serial, err := c.servedSerial(n)
		if err != nil {
			return false, err.Error()
		}
		return serial != before, "still serial " + serial
	})
	if now := startedAt(); now != started {
		t.Fatalf("%s restarted (started at %s, then %s): rotation must not need a restart", svc, started, now)
	}
	l.strong(n, c.mustNext(n, "strong", 1))
	if out := c.composeRun(composeTimeout, "run", "--rm", "-T", "certs"); !strings.Contains(out, "Nothing to do") {
		t.Fatalf("the certs service, run again after the rotation, did not find everything in order:\n%s", out)
	}
}

// servedSerial returns the serial number of the certificate the node
// presents on its published port, verified against the server CA.
func (c *cluster) servedSerial(n node) (string, error) {
	caPEM, err := os.ReadFile(filepath.Join(c.certs, "server-ca.pem"))
	if err != nil {
		return "", err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return "", errors.New("no certificate in server-ca.pem")
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(c.certs, "admin-client.pem"), filepath.Join(c.certs, "admin-client-key.pem"))
	if err != nil {
		return "", err
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", n.hostPort),
		&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12})
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Text(16), nil
}

// mustRefuse runs an ordinal command with the TLS flags creds (nil: plain
// TCP) that must fail without output, its error containing each of want.
func (c *cluster) mustRefuse(n node, what string, creds, want []string, args ...string) {
	c.t.Helper()
	stdout, stderr, err := c.ordinalAs(n, creds, args...)
	if err == nil {
		c.t.Fatalf("ordinal %s via %s with %s succeeded, want it refused:\n%s", strings.Join(args, " "), n.name, what, stdout)
	}
	if stdout != "" {
		c.t.Errorf("ordinal %s via %s with %s printed %q before failing", strings.Join(args, " "), n.name, what, stdout)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			c.t.Fatalf("ordinal %s via %s with %s failed, but not with %q: %v\n%s", strings.Join(args, " "), n.name, what, w, err, stderr)
		}
	}
}

// down dumps the logs when the test failed, then removes everything the
// project created and checks that nothing is left.
func (c *cluster) down() {
	t := c.t
	if t.Failed() {
		stdout, stderr, _ := c.composeArgs(composeTimeout, "logs", "--no-color", "--timestamps", "--tail=300")
		t.Logf("%s logs:\n%s%s", strings.Join(c.compose, " "), stdout, stderr)
		if stdout, stderr, err := run(commandTimeout, nil, "docker", "logs", "--timestamps", "--tail=300", c.node4); err == nil {
			t.Logf("node4 logs:\n%s%s", stdout, stderr)
		}
	}
	// node4 first: the project's network cannot go while it is attached.
	if _, stderr, err := run(commandTimeout, nil, "docker", "rm", "--force", "--volumes", c.node4); err != nil && !strings.Contains(stderr, "No such container") {
		t.Errorf("remove %s: %v: %s", c.node4, err, stderr)
	}
	if _, stderr, err := c.composeArgs(composeTimeout, "--profile", "monitoring", "down", "--volumes", "--remove-orphans", "--timeout", "5"); err != nil {
		t.Errorf("compose down: %v: %s", err, stderr)
	}
	filter := "label=com.docker.compose.project=" + c.project
	for _, kind := range []string{"container", "volume", "network"} {
		args := []string{kind, "ls", "--quiet", "--filter", filter}
		if kind == "container" {
			args = append(args, "--all")
		}
		if out, stderr, err := run(commandTimeout, nil, "docker", args...); err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("%ss of project %s left after compose down: %q %v %s", kind, c.project, out, err, stderr)
		}
	}
}

// composeRun runs a compose command of the project and returns its stdout;
// failing, it fails the test.
func (c *cluster) composeRun(timeout time.Duration, args ...string) string {
	c.t.Helper()
	stdout, stderr, err := c.composeArgs(timeout, args...)
	if err != nil {
		c.t.Fatalf("%s %s: %v\n%s", strings.Join(c.compose, " "), strings.Join(args, " "), err, stderr)
	}
	return stdout
}

func (c *cluster) composeArgs(timeout time.Duration, args ...string) (string, string, error) {
	argv := append(append(append([]string{}, c.compose[1:]...), "--file", c.file, "--project-name", c.project), args...)
	return run(timeout, c.env, c.compose[0], argv...)
}

// docker runs a docker command and returns its stdout; failing, it fails
// the test.
func (c *cluster) docker(timeout time.Duration, args ...string) string {
	c.t.Helper()
	stdout, stderr, err := run(timeout, nil, "docker", args...)
	if err != nil {
		c.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return stdout
}

// container returns the ID of a service's container.
func (c *cluster) container(svc string) string { return c.ids[svc] }

// waitHealthy waits until Docker reports the services' containers healthy
// (their healthcheck is `ordinal health`) and each answers `ordinal health`
// on its published port.
func (c *cluster) waitHealthy(svcs ...string) {
	c.t.Helper()
	for _, svc := range svcs {
		c.waitContainerHealthy(c.container(svc), healthyTimeout)
		n := c.hostNode(svc)
		poll(c.t, svc+" answers ordinal health on its published port", healthyTimeout, func() (bool, string) {
			stdout, stderr, err := c.ordinal(n, "health", "--timeout", "2s")
			return err == nil && strings.TrimSpace(stdout) == "SERVING", stdout + stderr
		})
	}
}

func (c *cluster) waitContainerHealthy(id string, timeout time.Duration) {
	c.t.Helper()
	poll(c.t, "container "+id+" healthy", timeout, func() (bool, string) {
		stdout, stderr, err := run(commandTimeout, nil, "docker", "inspect", "--format",
			"{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}", id)
		state := strings.TrimSpace(stdout)
		if err != nil {
			return false, stderr
		}
		if !strings.HasPrefix(state, "running") {
			c.t.Fatalf("container %s is %s, want running", id, state)
		}
		return state == "running healthy", state
	})
}

// checkDemo runs `ordinal demo` against node1's published port, exactly as
// Layotto's quick start does, and compares the whole output.
func (c *cluster) checkDemo() {
	c.t.Helper()
	stdout, stderr, err := c.ordinal(c.hostNode("node1"), "demo", "-s", "sequencer_demo")
	if err != nil {
		c.t.Fatalf("ordinal demo: %v\n%s%s", err, stdout, stderr)
	}
	var want strings.Builder
	want.WriteString("Try to get next id.Key:key666\n")
	for id := 1; id <= 10; id++ {
		fmt.Fprintf(&want, "Next id:next_id:%d\n", id)
	}
	want.WriteString("Demo success!\n")
	if stdout != want.String() {
		c.t.Fatalf("ordinal demo printed\n%s\nwant\n%s", stdout, want.String())
	}
}

// node is where ordinal commands are sent: a published port from this
// machine, or a container reached through docker exec.
type node struct {
	name          string
	hostPort      int    // published gRPC port; 0 when container is set
	container     string // run ordinal inside this container
	containerPort int    // the gRPC port inside container; 0: grpcPort
}

func (c *cluster) hostNode(svc string) node {
	return node{name: svc, hostPort: c.ports[svc]}
}

// ordinal runs an ordinal client command against n as the admin.
func (c *cluster) ordinal(n node, args ...string) (string, string, error) {
	return c.ordinalAs(n, c.admin, args...)
}

// ordinalAs runs an ordinal client command against n with the TLS flags
// creds (nil: plain TCP). In a container it uses the admin's files in the
// certs volume.
func (c *cluster) ordinalAs(n node, creds []string, args ...string) (string, string, error) {
	if n.container != "" {
		port := n.containerPort
		if port == 0 {
			port = grpcPort
		}
		argv := append([]string{"exec", n.container, "/ordinal"}, args...)
		argv = append(argv, "--addr", fmt.Sprintf("127.0.0.1:%d", port))
		argv = append(argv, tlsFlags(containerCerts, "admin")...)
		return run(commandTimeout, nil, "docker", argv...)
	}
	argv := append(append([]string{}, args...), "--addr", fmt.Sprintf("127.0.0.1:%d", n.hostPort))
	argv = append(argv, creds...)
	return run(commandTimeout, nil, c.bin, argv...)
}

// ordinalRetrying runs an ordinal command until it succeeds, retrying only
// while the cluster answers Unavailable (no leader yet) or a call times out
// waiting for one.
func (c *cluster) ordinalRetrying(n node, timeout time.Duration, args ...string) string {
	c.t.Helper()
	var out string
	var retries []string
	poll(c.t, fmt.Sprintf("ordinal %s via %s", strings.Join(args, " "), n.name), timeout, func() (bool, string) {
		stdout, stderr, err := c.ordinal(n, args...)
		if err == nil {
			out = stdout
			return true, ""
		}
		if !retryable(stderr) {
			c.t.Fatalf("ordinal %s via %s: %v\n%s%s", strings.Join(args, " "), n.name, err, stdout, stderr)
		}
		retries = append(retries, strings.TrimSpace(stderr))
		return false, stderr
	})
	if len(retries) > 0 {
		c.t.Logf("ordinal %s via %s succeeded after %d retries, the first for: %s", strings.Join(args, " "), n.name, len(retries), retries[0])
	}
	return out
}

// retryable reports whether a failed ordinal command met a cluster without
// a leader, which a failover resolves.
func retryable(stderr string) bool {
	return strings.Contains(stderr, ": Unavailable:") || strings.Contains(stderr, ": DeadlineExceeded:")
}

// mustNext takes count ids through n, with no retry: the cluster is stable.
func (c *cluster) mustNext(n node, mode string, count int) []int64 {
	c.t.Helper()
	stdout, stderr, err := c.ordinal(n, nextArgs(mode, count)...)
	if err != nil {
		c.t.Fatalf("ordinal next --mode %s via %s: %v\n%s%s", mode, n.name, err, stdout, stderr)
	}
	return c.parseIDs(stdout, count)
}

// nextRetrying takes count ids through n, retrying while there is no
// leader.
func (c *cluster) nextRetrying(n node, mode string, count int, timeout time.Duration) []int64 {
	c.t.Helper()
	return c.parseIDs(c.ordinalRetrying(n, timeout, nextArgs(mode, count)...), count)
}

func nextArgs(mode string, count int) []string {
	return []string{"next", "--mode", mode, "--count", strconv.Itoa(count), "--timeout", "5s", key}
}

// parseIDs reads `ordinal next` output: "ID", or "FIRST..LAST (N ids)".
func (c *cluster) parseIDs(out string, count int) []int64 {
	c.t.Helper()
	out = strings.TrimSpace(out)
	if count == 1 {
		id, err := strconv.ParseInt(out, 10, 64)
		if err != nil {
			c.t.Fatalf("ordinal next printed %q, want an id", out)
		}
		return []int64{id}
	}
	var first, last, n int64
	if _, err := fmt.Sscanf(out, "%d..%d (%d ids)", &first, &last, &n); err != nil || n != int64(count) || last-first+1 != n {
		c.t.Fatalf("ordinal next --count %d printed %q, want FIRST..LAST (%d ids)", count, out, count)
	}
	ids := make([]int64, 0, count)
	for id := first; id <= last; id++ {
		ids = append(ids, id)
	}
	return ids
}

// leader returns the leader's node ID and term as n sees them.
func (c *cluster) leader(n node, timeout time.Duration) (string, uint64) {
	c.t.Helper()
	out := strings.TrimSpace(c.ordinalRetrying(n, timeout, "leader"))
	// <node_id> raft=... grpc=... term=N
	fields := strings.Fields(out)
	if len(fields) != 4 || !strings.HasPrefix(fields[3], "term=") {
		c.t.Fatalf("ordinal leader printed %q, want <node_id> raft=... grpc=... term=N", out)
	}
	term, err := strconv.ParseUint(strings.TrimPrefix(fields[3], "term="), 10, 64)
	if err != nil {
		c.t.Fatalf("ordinal leader printed %q: bad term: %v", out, err)
	}
	known := false
	for _, svc := range services {
		known = known || fields[0] == svc
	}
	if !known {
		c.t.Fatalf("ordinal leader printed %q, want one of %v", out, services)
	}
	return fields[0], term
}

// member is a row of `ordinal members`.
type member struct {
	voter, leader, reachable bool
}

// waitMembers waits until `ordinal members` through n lists exactly want,
// every one a reachable voter, with one leader.
func (c *cluster) waitMembers(n node, timeout time.Duration, want ...string) {
	c.t.Helper()
	poll(c.t, fmt.Sprintf("members via %s to be the voters %v", n.name, want), timeout, func() (bool, string) {
		stdout, stderr, err := c.ordinal(n, "members", "--timeout", "5s")
		if err != nil {
			if !retryable(stderr) {
				c.t.Fatalf("ordinal members via %s: %v\n%s", n.name, err, stderr)
			}
			return false, stderr
		}
		members, err := parseMembers(stdout)
		if err != nil {
			c.t.Fatalf("ordinal members: %v\n%s", err, stdout)
		}
		leaders := 0
		for _, m := range members {
			if m.leader {
				leaders++
			}
		}
		if len(members) != len(want) || leaders != 1 {
			return false, stdout
		}
		for _, id := range want {
			if m, ok := members[id]; !ok || !m.voter || !m.reachable {
				return false, stdout
			}
		}
		return true, stdout
	})
}

// parseMembers reads the table of `ordinal members`:
//
//	NODE   RAFT ADDRESS  GRPC ADDRESS  SUFFRAGE  LEADER  BEHIND
//	node1  node1:34905   node1:34904   voter     *       0 entries
//	node2  node2:34905   node2:34904   non-voter         unreachable
//	cluster 21efdf0d..., commit index 6
func parseMembers(out string) (map[string]member, error) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "NODE") || !strings.HasPrefix(lines[len(lines)-1], "cluster ") {
		return nil, errors.New("not a members table")
	}
	members := map[string]member{}
	for _, line := range lines[1 : len(lines)-1] {
		f := strings.Fields(line)
		if len(f) < 5 || (f[3] != "voter" && f[3] != "non-voter") {
			return nil, fmt.Errorf("bad members row %q", line)
		}
		members[f[0]] = member{
			voter:     f[3] == "voter",
			leader:    f[4] == "*",
			reachable: f[len(f)-1] != "unreachable",
		}
	}
	return members, nil
}

// runNode4 starts a fourth node on the project's network, as
// deploy/README.md shows: joining the running cluster through the others'
// peer ports with no --bootstrap-expect, with its own certificates from the
// certs volume (issueCerts made them), and the image's healthcheck pointed
// at the admin's client certificate through ORDINAL_TLS_* variables
// (docker run's --health-cmd needs a shell; serve's own TLS flags, on the
// command line, take precedence over them). Its client port is node4Port,
// set as ORDINAL_GRPC_ADDR, which both serve and the image's healthcheck
// read: the container turns healthy only if the healthcheck follows it.
func (c *cluster) runNode4() node {
	c.t.Helper()
	network := strings.TrimSpace(c.docker(commandTimeout, "inspect", "--format",
		"{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}", c.container("node1")))
	if network == "" || strings.Contains(network, " ") {
		c.t.Fatalf("node1 is on networks %q, want one", network)
	}
	certsVolume := strings.TrimSpace(c.docker(commandTimeout, "inspect", "--format",
		`{{range .Mounts}}{{if eq .Destination "`+containerCerts+`"}}{{.Name}}{{end}}{{end}}`, c.container("node1")))
	if certsVolume == "" {
		c.t.Fatalf("node1 has no volume on %s", containerCerts)
	}
	cert := func(f string) string { return containerCerts + "/" + f }
	var join []string
	for _, svc := range services {
		join = append(join, fmt.Sprintf("%s:%d", svc, peerPort))
	}
	c.docker(commandTimeout, "run", "--detach", "--name", c.node4, "--label", e2eLabel+"="+c.project,
		"--network", network, "--network-alias", "node4", "--hostname", "node4",
		"--volume", certsVolume+":"+containerCerts+":ro",
		"--env", "ORDINAL_TLS_CA_FILE="+cert("server-ca.pem"),
		"--env", "ORDINAL_TLS_CERT_FILE="+cert("admin-client.pem"),
		"--env", "ORDINAL_TLS_KEY_FILE="+cert("admin-client-key.pem"),
		"--env", fmt.Sprintf("ORDINAL_GRPC_ADDR=0.0.0.0:%d", node4Port),
		c.image,
		"serve", "--node-id", "node4",
		"--raft-addr", fmt.Sprintf("0.0.0.0:%d", peerPort),
		"--advertise-grpc", fmt.Sprintf("node4:%d", node4Port), "--advertise-raft", fmt.Sprintf("node4:%d", peerPort),
		"--data-dir", "/data", "--join", strings.Join(join, ","),
		"--peer-cert-file", cert("node4-peer.pem"), "--peer-key-file", cert("node4-peer-key.pem"), "--peer-ca-file", cert("peer-ca.pem"),
		"--tls-cert-file", cert("node4-server.pem"), "--tls-key-file", cert("node4-server-key.pem"), "--tls-client-ca-file", cert("client-ca.pem"),
		"--admin-names", "admin")
	return node{name: "node4", container: c.node4, containerPort: node4Port}
}

// ledger checks every id taken: all distinct, and STRONG ids, taken one
// after another, strictly increasing.
type ledger struct {
	t         *testing.T
	seen      map[int64]string // id -> where it was taken
	strongIDs []int64
}

func newLedger(t *testing.T) *ledger {
	return &ledger{t: t, seen: map[int64]string{}}
}

func (l *ledger) strong(n node, ids []int64) {
	l.t.Helper()
	for _, id := range ids {
		if last := len(l.strongIDs) - 1; last >= 0 && id <= l.strongIDs[last] {
			l.t.Fatalf("STRONG id %d via %s is not above the previous STRONG id %d", id, n.name, l.strongIDs[last])
		}
		l.strongIDs = append(l.strongIDs, id)
	}
	l.add("STRONG", n, ids)
}

func (l *ledger) weak(n node, ids []int64) {
	l.t.Helper()
	l.add("WEAK", n, ids)
}

func (l *ledger) add(mode string, n node, ids []int64) {
	l.t.Helper()
	where := mode + " via " + n.name
	for _, id := range ids {
		if id <= 0 {
			l.t.Fatalf("%s id %d via %s is not positive", mode, id, n.name)
		}
		if prev, dup := l.seen[id]; dup {
			l.t.Fatalf("id %d taken twice: %s, then %s", id, prev, where)
		}
		l.seen[id] = where
	}
}

// poll calls check until it reports true, failing the test with check's
// last detail when timeout passes first.
func poll(t *testing.T, what string, timeout time.Duration, check func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := check()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last:\n%s", timeout, what, detail)
		}
		time.Sleep(pollInterval)
	}
}

// run runs a command with extra environment, bounded by timeout, and
// returns its stdout and stderr.
func run(timeout time.Duration, env []string, name string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (timed out after %v)", err, timeout)
	}
	return stdout.String(), stderr.String(), err
}

// freePorts returns n distinct ports free on loopback right now, taken
// below the kernel's ephemeral range: a container that a test stops and
// starts again must get its published port back, and a port from the
// ephemeral range can meanwhile become the source port of any outgoing
// connection on the machine (other test packages run in parallel).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	low := belowEphemeral()
	var ports []int
	for port := low - 1; len(ports) < n && port > 1024; port-- {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		defer l.Close()
		ports = append(ports, port)
	}
	if len(ports) < n {
		t.Fatalf("found %d free ports below %d, need %d", len(ports), low, n)
	}
	return ports
}

// belowEphemeral returns a random port up to 4096 below the first port of
// the kernel's ephemeral range (32768 by default), so that tests taking
// ports downwards from it rarely probe the same ones.
func belowEphemeral() int {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var lo, hi int
		if _, err := fmt.Sscan(string(b), &lo, &hi); err == nil && lo > 2048 {
			low = lo
		}
	}
	var b [2]byte
	_, _ = rand.Read(b[:])
	return low - int(b[0])<<4 - int(b[1])%16
}

func randomSuffix(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
