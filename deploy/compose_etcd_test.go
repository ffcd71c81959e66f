package deploy_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// etcdImageEnv names the etcd image docker-compose.etcd.yml runs. When the
// test's environment sets it, the test uses that image (pulling it if
// need be); otherwise it builds one from Debian's etcd-server binary with
// make etcd-image, since CI has no registry.
const etcdImageEnv = "ETCD_IMAGE"

// TestComposeEtcd is the end-to-end test of the etcd-backed deployment,
// docker-compose.etcd.yml: etcd and three ordinal nodes that keep their
// counters in it, secured as in docker-compose.yml (every command of the
// test uses the admin's client certificate, copied out of the certs
// volume; calls without one are refused). Two of the three nodes are killed (with Raft that would
// lose the quorum; with etcd the third node carries on), brought back, and
// then etcd itself is restarted: the nodes resume by themselves.
func TestComposeEtcd(t *testing.T) {
	start := time.Now()
	composeCmd := requireDocker(t)
	c := newCluster(t, composeCmd)
	c.file = "docker-compose.etcd.yml"
	c.svcs = append([]string{"etcd"}, services...)
	step := func(format string, args ...any) {
		t.Logf("[%5.1fs] %s", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}

	etcdImage := os.Getenv(etcdImageEnv)
	if etcdImage == "" {
		etcdImage = "ordinal-e2e-etcd:" + strings.TrimPrefix(c.project, "ordinal-e2e-")
		step("building %s from Debian's etcd (make etcd-image)", etcdImage)
		buildEtcdImage(t, etcdImage)
	}
	c.env = append(c.env, etcdImageEnv+"="+etcdImage, fmt.Sprintf("ETCD_PORT=%d", freePorts(t, 1)[0]))

	step("building the binary and image %s", c.image)
	c.buildImage()

	step("starting project %s (etcd image %s), host ports %v", c.project, etcdImage, c.ports)
	c.up()
	c.waitHealthy(services...)
	step("etcd up, all three nodes healthy")

	c.checkDemo()
	step("demo output as Layotto's")

	serverCA := []string{"--tls-ca-file", filepath.Join(c.certs, "server-ca.pem")}
	for _, svc := range services {
		c.mustRefuse(c.hostNode(svc), "plain TCP", nil, []string{": Unavailable:"}, nextArgs("strong", 1)...)
		c.mustRefuse(c.hostNode(svc), "TLS without a client certificate", serverCA, []string{": Unavailable:", "requires a client certificate"}, nextArgs("strong", 1)...)
	}
	step("every node refuses plain TCP and TLS without a client certificate")

	l := newLedger(t)
	takeEverywhere := func(svcs []string, timeout time.Duration) {
		for _, svc := range svcs {
			n := c.hostNode(svc)
			l.strong(n, c.nextRetrying(n, "strong", 1, timeout))
			l.weak(n, c.nextRetrying(n, "weak", 1, timeout))
		}
	}
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

	killed, survivor := services[:2], services[2]
	for _, svc := range killed {
		c.docker(commandTimeout, "kill", c.container(svc))
	}
	step("killed %v; %s alone serves (STRONG once the leader's etcd lease, if it was a killed node's, expires)", killed, survivor)
	for range 3 {
		takeEverywhere([]string{survivor}, failoverTimeout)
	}
	l.weak(c.hostNode(survivor), c.nextRetrying(c.hostNode(survivor), "weak", 5, failoverTimeout))
	step("took ids through %s with two of three nodes down", survivor)

	for _, svc := range killed {
		c.docker(commandTimeout, "start", c.container(svc))
	}
	c.waitHealthy(killed...)
	takeEverywhere(services, rejoinTimeout)
	step("%v restarted and serve", killed)

	c.docker(commandTimeout, "restart", "--time", "2", c.container("etcd"))
	step("restarted etcd")
	takeEverywhere(services, rejoinTimeout)
	c.waitHealthy(services...)
	step("the nodes resumed by themselves; %d ids taken, %d of them STRONG, all unique, STRONG strictly increasing", len(l.seen), len(l.strongIDs))
}

// buildEtcdImage runs make etcd-image, which packages Debian's etcd-server
// binary, and removes the image when the test ends.
func buildEtcdImage(t *testing.T, tag string) {
	t.Helper()
	if _, err := os.Stat("/usr/bin/etcd"); err != nil {
		msg := fmt.Sprintf("no %s given and no /usr/bin/etcd to build one from (apt-get install etcd-server)", etcdImageEnv)
		if os.Getenv(requireDockerEnv) == "1" {
			t.Fatalf("%s; %s=1 requires the compose end-to-end tests to run", msg, requireDockerEnv)
		}
		t.Skipf("skipping the etcd compose end-to-end test: %s", msg)
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatalf("make etcd-image needs make: %v", err)
	}
	t.Cleanup(func() {
		if _, stderr, err := run(commandTimeout, nil, "docker", "rmi", "--force", tag); err != nil && !strings.Contains(stderr, "No such image") {
			t.Errorf("remove image %s: %v: %s", tag, err, stderr)
		}
	})
	if stdout, stderr, err := run(buildTimeout, nil, "make", "--no-print-directory", "-C", "..", "etcd-image", "ETCD_LOCAL_IMAGE="+tag); err != nil {
		t.Fatalf("make etcd-image: %v\n%s%s", err, stdout, stderr)
	}
}
