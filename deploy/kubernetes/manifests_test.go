// Package kubernetes_test checks ordinal's Kubernetes manifests without a
// cluster: it decodes every file kustomization.yaml lists into the typed
// objects of k8s.io/api, strictly (a misspelt or misplaced field fails, as
// it would with kubectl's server-side validation), and checks that they
// fit together: selectors and labels, ports, probes, the per-pod command
// line (node ID, advertised addresses, --join, --bootstrap-expect, data
// directory, certificate files), the security context, resources, the
// disruption budget and the network policy. One test builds ordinal and
// checks that every flag the manifests give `ordinal serve` is one of its
// flags. Nothing here skips: every test runs wherever Go does.
package kubernetes_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/ordinal-dev/ordinal/internal/proccluster"
)

const (
	// containerName is the ordinal container of the StatefulSet's pods.
	containerName = "ordinal"
	// clusterDomain is the DNS domain the manifests assume for the
	// cluster (PEER_DOMAIN in statefulset.yaml).
	clusterDomain = "cluster.local"
	// podNameVar and podNamespaceVar are the container's variables from
	// the downward API that the command line uses.
	podNameVar      = "POD_NAME"
	podNamespaceVar = "POD_NAMESPACE"
	// envPrefix is the prefix of the environment variables ordinal reads
	// as flags (ORDINAL_<FLAG>).
	envPrefix = "ORDINAL_"
)

// kustomization is the part of kustomization.yaml the manifests use; a
// field it does not know fails the strict decoding, so a new one gets
// checked here too.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images"`
}

// manifests are the decoded objects.
type manifests struct {
	kust     kustomization
	sts      *appsv1.StatefulSet
	services map[string]*corev1.Service
	pdb      *policyv1.PodDisruptionBudget
	netpol   *networkingv1.NetworkPolicy
}

// load decodes kustomization.yaml and every resource it lists, strictly.
func load(t *testing.T) *manifests {
	t.Helper()
	m := &manifests{services: map[string]*corev1.Service{}}
	data, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, &m.kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	for _, file := range m.kust.Resources {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("kustomization.yaml lists %s: %v", file, err)
		}
		for i, doc := range splitDocuments(data) {
			where := fmt.Sprintf("%s, document %d", file, i+1)
			var meta metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			var obj any
			switch meta.APIVersion + " " + meta.Kind {
			case "apps/v1 StatefulSet":
				if m.sts != nil {
					t.Fatalf("%s: a second StatefulSet", where)
				}
				m.sts = &appsv1.StatefulSet{}
				obj = m.sts
			case "v1 Service":
				obj = &corev1.Service{}
			case "policy/v1 PodDisruptionBudget":
				if m.pdb != nil {
					t.Fatalf("%s: a second PodDisruptionBudget", where)
				}
				m.pdb = &policyv1.PodDisruptionBudget{}
				obj = m.pdb
			case "networking.k8s.io/v1 NetworkPolicy":
				if m.netpol != nil {
					t.Fatalf("%s: a second NetworkPolicy", where)
				}
				m.netpol = &networkingv1.NetworkPolicy{}
				obj = m.netpol
			default:
				t.Fatalf("%s: %s %s is not a kind this test checks: teach it", where, meta.APIVersion, meta.Kind)
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			if svc, ok := obj.(*corev1.Service); ok {
				if _, dup := m.services[svc.Name]; dup || svc.Name == "" {
					t.Fatalf("%s: Service %q is unnamed or named twice", where, svc.Name)
				}
				m.services[svc.Name] = svc
			}
		}
	}
	switch {
	case m.sts == nil:
		t.Fatal("no StatefulSet among the resources")
	case m.pdb == nil:
		t.Fatal("no PodDisruptionBudget among the resources")
	case m.netpol == nil:
		t.Fatal("no NetworkPolicy among the resources")
	case len(m.services) != 2:
		t.Fatalf("want 2 Services (headless and client), have %d", len(m.services))
	}
	return m
}

// splitDocuments splits a YAML stream at its "---" lines, dropping
// documents that hold only comments.
func splitDocuments(data []byte) [][]byte {
	var docs [][]byte
	for _, doc := range regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(data), -1) {
		j, err := yaml.YAMLToJSON([]byte(doc))
		if err == nil && string(j) == "null" {
			continue
		}
		docs = append(docs, []byte(doc))
	}
	return docs
}

// container returns the ordinal container of the pod template.
func (m *manifests) container(t *testing.T) *corev1.Container {
	t.Helper()
	cs := m.sts.Spec.Template.Spec.Containers
	if len(cs) != 1 || cs[0].Name != containerName {
		t.Fatalf("want one container named %s, have %d", containerName, len(cs))
	}
	return &cs[0]
}

// replicas returns the StatefulSet's replicas, which must be set.
func (m *manifests) replicas(t *testing.T) int {
	t.Helper()
	if m.sts.Spec.Replicas == nil {
		t.Fatal("the StatefulSet does not set replicas")
	}
	return int(*m.sts.Spec.Replicas)
}

// headless returns the Service the StatefulSet names as its serviceName.
func (m *manifests) headless(t *testing.T) *corev1.Service {
	t.Helper()
	svc := m.services[m.sts.Spec.ServiceName]
	if svc == nil {
		t.Fatalf("serviceName %q of the StatefulSet is not among the Services", m.sts.Spec.ServiceName)
	}
	return svc
}

// client returns the Service that is not the headless one.
func (m *manifests) client(t *testing.T) *corev1.Service {
	t.Helper()
	for name, svc := range m.services {
		if name != m.sts.Spec.ServiceName {
			return svc
		}
	}
	t.Fatal("no client Service")
	return nil
}

// podName is the name of the StatefulSet's pod with ordinal i.
func (m *manifests) podName(i int) string { return fmt.Sprintf("%s-%d", m.sts.Name, i) }

// containerPort resolves a Service's, probe's or policy's port (a name or
// a number) to the container's port.
func containerPort(c *corev1.Container, p intstr.IntOrString) (corev1.ContainerPort, bool) {
	for _, cp := range c.Ports {
		if p.Type == intstr.String && cp.Name == p.StrVal || p.Type == intstr.Int && cp.ContainerPort == p.IntVal {
			return cp, true
		}
	}
	return corev1.ContainerPort{}, false
}

// namedPort returns the number of the container's port name.
func namedPort(t *testing.T, c *corev1.Container, name string) int32 {
	t.Helper()
	cp, ok := containerPort(c, intstr.FromString(name))
	if !ok {
		t.Fatalf("the container has no port named %s", name)
	}
	return cp.ContainerPort
}

// expandedEnv is the container's environment for pod podName, expanded
// as the kubelet does: $(VAR) refers to a variable defined before.
func expandedEnv(t *testing.T, c *corev1.Container, podName, namespace string) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = expand(e.Value, env)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env[e.Name] = podName
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace":
			env[e.Name] = namespace
		default:
			t.Fatalf("env %s: a source this test does not know; teach it", e.Name)
		}
	}
	return env
}

// expand replaces $(VAR) with VAR's value where env has it and $$ with $,
// as Kubernetes expands command lines and variables.
func expand(s string, env map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '(':
			if end := strings.IndexByte(s[i:], ')'); end > 0 {
				if v, ok := env[s[i+2:i+end]]; ok {
					b.WriteString(v)
					i += end
					continue
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// serveFlags returns the flags of the container's `serve` command line
// for pod podName, expanded, by name. Every argument must be of the form
// --name=value (or --name for a boolean), so that this test reads them as
// ordinal does.
func (m *manifests) serveFlags(t *testing.T, podName string) map[string]string {
	t.Helper()
	c := m.container(t)
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("the container's args must start with serve: %q", c.Args)
	}
	env := expandedEnv(t, c, podName, m.kust.Namespace)
	flags := map[string]string{}
	for _, arg := range c.Args[1:] {
		arg = expand(arg, env)
		if strings.Contains(arg, "$(") {
			t.Errorf("%s: %q refers to a variable the container does not define", podName, arg)
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(arg, "--"), "=")
		if !strings.HasPrefix(arg, "--") || name == "" {
			t.Fatalf("%s: argument %q is not --name=value", podName, arg)
		}
		if !hasValue {
			value = "true"
		}
		if _, dup := flags[name]; dup {
			t.Errorf("%s: --%s is given twice", podName, name)
		}
		flags[name] = value
	}
	return flags
}

// mountOf returns the container's mount of volume name.
func mountOf(t *testing.T, c *corev1.Container, name string) corev1.VolumeMount {
	t.Helper()
	for _, vm := range c.VolumeMounts {
		if vm.Name == name {
			return vm
		}
	}
	t.Fatalf("the container does not mount volume %s", name)
	return corev1.VolumeMount{}
}

// certsVolume returns the pod's volume backed by a Secret, which holds
// the certificates.
func (m *manifests) certsVolume(t *testing.T) corev1.Volume {
	t.Helper()
	var found []corev1.Volume
	for _, v := range m.sts.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one Secret volume (the certificates), have %d", len(found))
	}
	return found[0]
}

func TestKustomizationListsEveryManifest(t *testing.T) {
	m := load(t)
	if m.kust.APIVersion != "kustomize.config.k8s.io/v1beta1" || m.kust.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml is %s %s", m.kust.APIVersion, m.kust.Kind)
	}
	if m.kust.Namespace == "" {
		t.Error("kustomization.yaml sets no namespace: the Secrets and the server certificates' names depend on it")
	}
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files = slices.DeleteFunc(files, func(f string) bool { return f == "kustomization.yaml" })
	listed := slices.Sorted(slices.Values(m.kust.Resources))
	if !slices.Equal(listed, files) {
		t.Errorf("kustomization.yaml lists %v; the directory has %v", listed, files)
	}
	// The image: the manifest names it, kustomization.yaml says which it is.
	c := m.container(t)
	name := c.Image
	if i := strings.LastIndexAny(name, ":@"); i > strings.LastIndex(name, "/") {
		name = name[:i]
	}
	if len(m.kust.Images) != 1 || m.kust.Images[0].Name != name || m.kust.Images[0].NewName == "" {
		t.Errorf("kustomization.yaml's images must set the image %q the container names (%q), have %+v", name, c.Image, m.kust.Images)
	}
	if c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("imagePullPolicy %q: want IfNotPresent, so that an image loaded into the cluster's nodes (no registry) runs, whatever its tag", c.ImagePullPolicy)
	}
}

func TestSelectorsAndLabels(t *testing.T) {
	m := load(t)
	sel := m.sts.Spec.Selector
	if sel == nil || len(sel.MatchLabels) == 0 || len(sel.MatchExpressions) > 0 {
		t.Fatalf("the StatefulSet's selector must be matchLabels only: %+v", sel)
	}
	want := sel.MatchLabels
	for k, v := range want {
		if got := m.sts.Spec.Template.Labels[k]; got != v {
			t.Errorf("pod template label %s=%q, the selector wants %q", k, got, v)
		}
	}
	for name, svc := range m.services {
		if !mapsEqual(svc.Spec.Selector, want) {
			t.Errorf("Service %s selects %v, the StatefulSet's pods are %v", name, svc.Spec.Selector, want)
		}
	}
	checks := []struct {
		what string
		sel  *metav1.LabelSelector
	}{
		{"the PodDisruptionBudget", m.pdb.Spec.Selector},
		{"the NetworkPolicy", &m.netpol.Spec.PodSelector},
	}
	for _, tsc := range m.sts.Spec.Template.Spec.TopologySpreadConstraints {
		checks = append(checks, struct {
			what string
			sel  *metav1.LabelSelector
		}{"the topology spread constraint", tsc.LabelSelector})
	}
	for _, c := range checks {
		if c.sel == nil || len(c.sel.MatchExpressions) > 0 || !mapsEqual(c.sel.MatchLabels, want) {
			t.Errorf("%s selects %+v, the StatefulSet's pods are %v", c.what, c.sel, want)
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

func TestStatefulSet(t *testing.T) {
	m := load(t)
	s := m.sts.Spec
	if n := m.replicas(t); n != 3 {
		t.Errorf("replicas %d, want 3", n)
	}
	if s.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("podManagementPolicy %q: want Parallel, so that all pods start together and can find --bootstrap-expect peers", s.PodManagementPolicy)
	}
	if s.UpdateStrategy.Type != appsv1.RollingUpdateStatefulSetStrategyType {
		t.Errorf("updateStrategy %q, want RollingUpdate", s.UpdateStrategy.Type)
	}
	if p := s.PersistentVolumeClaimRetentionPolicy; p == nil || p.WhenScaled != appsv1.RetainPersistentVolumeClaimRetentionPolicyType ||
		p.WhenDeleted != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
		t.Errorf("persistentVolumeClaimRetentionPolicy %+v: want Retain for both, deleting a node's data is a step of its own", p)
	}
	h := m.headless(t)
	if h.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("the StatefulSet's Service %s has clusterIP %q, want None (headless: a DNS name per pod)", h.Name, h.Spec.ClusterIP)
	}
	if !h.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s must publish pods that are not ready: they become ready only after finding each other through it", h.Name)
	}
	if cl := m.client(t); cl.Spec.ClusterIP == corev1.ClusterIPNone || cl.Spec.PublishNotReadyAddresses ||
		(cl.Spec.Type != "" && cl.Spec.Type != corev1.ServiceTypeClusterIP) {
		t.Errorf("client Service %s must be a ClusterIP Service of ready pods: %+v", cl.Name, cl.Spec)
	}
	pod := m.sts.Spec.Template.Spec
	if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		t.Error("enableServiceLinks must be false: the Service named ordinal would put ORDINAL_* variables in the environment, which ordinal reads as flags")
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken must be false: ordinal never calls the Kubernetes API")
	}
	// The data volume: one claim per pod, mounted where --data-dir points
	// (TestCommandPerPod).
	if len(s.VolumeClaimTemplates) != 1 {
		t.Fatalf("want one volumeClaimTemplate, have %d", len(s.VolumeClaimTemplates))
	}
	pvc := s.VolumeClaimTemplates[0]
	if !slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
		t.Errorf("the data volume's access modes are %v, want ReadWriteOnce", pvc.Spec.AccessModes)
	}
	if q, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; !ok || q.Sign() <= 0 {
		t.Error("the data volume requests no storage")
	}
	for _, v := range pod.Volumes {
		if v.Name == pvc.Name {
			t.Errorf("volume %s is both a pod volume and the claim template: the claim would not be used", v.Name)
		}
	}
}

func TestServicePortsMatchTheContainer(t *testing.T) {
	m := load(t)
	c := m.container(t)
	for name, svc := range m.services {
		if len(svc.Spec.Ports) == 0 {
			t.Errorf("Service %s has no ports", name)
		}
		for _, p := range svc.Spec.Ports {
			t.Run(name+"/"+p.Name, func(t *testing.T) {
				cp, ok := containerPort(c, p.TargetPort)
				switch {
				case !ok:
					t.Fatalf("targetPort %s is not a port of the container", p.TargetPort.String())
				case p.Port != cp.ContainerPort:
					t.Errorf("port %d, the container's %s is %d: the same number everywhere keeps addresses simple", p.Port, cp.Name, cp.ContainerPort)
				case p.Name != cp.Name:
					t.Errorf("port named %q targets the container's %q", p.Name, cp.Name)
				case p.Protocol != "" && p.Protocol != corev1.ProtocolTCP:
					t.Errorf("protocol %s, want TCP", p.Protocol)
				}
			})
		}
	}
	// The client Service serves the gRPC API on Layotto's default port;
	// the headless one carries the peer port the nodes advertise.
	for _, want := range []struct {
		svc  *corev1.Service
		port string
		num  int32
	}{
		{m.client(t), "grpc", 34904},
		{m.headless(t), "peer", namedPort(t, c, "peer")},
	} {
		if !slices.ContainsFunc(want.svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == want.port && p.Port == want.num }) {
			t.Errorf("Service %s has no port %s %d", want.svc.Name, want.port, want.num)
		}
	}
	if got := namedPort(t, c, "grpc"); got != 34904 {
		t.Errorf("the container's grpc port is %d, want 34904", got)
	}
}

func TestProbesAndMetrics(t *testing.T) {
	m := load(t)
	c := m.container(t)
	metrics := namedPort(t, c, "metrics")
	flags := m.serveFlags(t, m.podName(0))
	host, port, err := net.SplitHostPort(flags["metrics-addr"])
	if err != nil {
		t.Fatalf("--metrics-addr %q: %v", flags["metrics-addr"], err)
	}
	if host != "0.0.0.0" || port != strconv.Itoa(int(metrics)) {
		t.Errorf("--metrics-addr %s: want 0.0.0.0:%d, where the kubelet's probes reach it", flags["metrics-addr"], metrics)
	}
	for _, tc := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"startup", c.StartupProbe, "/healthz"},
		{"liveness", c.LivenessProbe, "/healthz"},
		{"readiness", c.ReadinessProbe, "/readyz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.probe
			if p == nil || p.HTTPGet == nil {
				t.Fatal("missing, or not an HTTP GET")
			}
			if p.HTTPGet.Path != tc.path {
				t.Errorf("path %q, want %q", p.HTTPGet.Path, tc.path)
			}
			cp, ok := containerPort(c, p.HTTPGet.Port)
			if !ok || cp.ContainerPort != metrics {
				t.Errorf("port %s is not the metrics port %d", p.HTTPGet.Port.String(), metrics)
			}
			if p.HTTPGet.Scheme != "" && p.HTTPGet.Scheme != corev1.URISchemeHTTP {
				t.Errorf("scheme %s, want HTTP", p.HTTPGet.Scheme)
			}
			if p.PeriodSeconds <= 0 || p.TimeoutSeconds <= 0 || p.FailureThreshold <= 0 || p.TimeoutSeconds >= p.PeriodSeconds {
				t.Errorf("period %ds, timeout %ds, failure threshold %d: set each, the timeout below the period",
					p.PeriodSeconds, p.TimeoutSeconds, p.FailureThreshold)
			}
		})
	}
	if s := c.StartupProbe; s != nil && c.LivenessProbe != nil &&
		s.PeriodSeconds*s.FailureThreshold <= c.LivenessProbe.PeriodSeconds*c.LivenessProbe.FailureThreshold {
		t.Error("the startup probe must allow longer than the liveness probe: the data check at start takes a while on a large volume")
	}
	ann := m.sts.Spec.Template.Annotations
	for k, v := range map[string]string{
		"prometheus.io/scrape": "true",
		"prometheus.io/port":   strconv.Itoa(int(metrics)),
		"prometheus.io/path":   "/metrics",
	} {
		if ann[k] != v {
			t.Errorf("pod annotation %s=%q, want %q", k, ann[k], v)
		}
	}
}

func TestPodDisruptionBudget(t *testing.T) {
	m := load(t)
	spec := m.pdb.Spec
	if spec.MinAvailable != nil {
		t.Errorf("minAvailable %s: use maxUnavailable alone, which stays right when the StatefulSet scales", spec.MinAvailable.String())
	}
	if spec.MaxUnavailable == nil || *spec.MaxUnavailable != intstr.FromInt32(1) {
		t.Fatalf("maxUnavailable %v, want 1", spec.MaxUnavailable)
	}
	n := m.replicas(t)
	if quorum := n/2 + 1; n-spec.MaxUnavailable.IntValue() < quorum {
		t.Errorf("%d replicas less %d unavailable is below the Raft quorum %d", n, spec.MaxUnavailable.IntValue(), quorum)
	}
}

// TestCommandPerPod expands the container's command line for each pod as
// the kubelet does and checks what each node is told.
func TestCommandPerPod(t *testing.T) {
	m := load(t)
	c := m.container(t)
	n := m.replicas(t)
	if !slices.Equal(c.Command, []string{"/ordinal"}) {
		t.Errorf("command %q, want the image's binary [/ordinal]", c.Command)
	}
	grpc, peer := namedPort(t, c, "grpc"), namedPort(t, c, "peer")
	headless := m.headless(t).Name
	stable := func(pod string, port int32) string {
		return fmt.Sprintf("%s.%s.%s.svc.%s:%d", pod, headless, m.kust.Namespace, clusterDomain, port)
	}
	var wantJoin []string
	for i := range n {
		wantJoin = append(wantJoin, stable(m.podName(i), peer))
	}
	dataMount := mountOf(t, c, m.sts.Spec.VolumeClaimTemplates[0].Name)
	certs := mountOf(t, c, m.certsVolume(t).Name)
	if !certs.ReadOnly {
		t.Error("the certificates must be mounted read-only")
	}
	if certs.SubPath != "" {
		t.Error("the certificates must be mounted as a directory: files mounted with subPath are never updated, so rotation would need a restart")
	}
	for i := range n {
		pod := m.podName(i)
		t.Run(pod, func(t *testing.T) {
			f := m.serveFlags(t, pod)
			want := map[string]string{
				"node-id":            pod,
				"data-dir":           dataMount.MountPath,
				"grpc-addr":          fmt.Sprintf("0.0.0.0:%d", grpc),
				"raft-addr":          fmt.Sprintf("0.0.0.0:%d", peer),
				"advertise-grpc":     stable(pod, grpc),
				"advertise-raft":     stable(pod, peer),
				"bootstrap-expect":   strconv.Itoa(n),
				"peer-cert-file":     filepath.Join(certs.MountPath, pod+"-peer.pem"),
				"peer-key-file":      filepath.Join(certs.MountPath, pod+"-peer-key.pem"),
				"peer-ca-file":       filepath.Join(certs.MountPath, "peer-ca.pem"),
				"tls-cert-file":      filepath.Join(certs.MountPath, pod+"-server.pem"),
				"tls-key-file":       filepath.Join(certs.MountPath, pod+"-server-key.pem"),
				"tls-client-ca-file": filepath.Join(certs.MountPath, "client-ca.pem"),
			}
			for name, v := range want {
				if f[name] != v {
					t.Errorf("--%s=%q, want %q", name, f[name], v)
				}
			}
			join := strings.Split(f["join"], ",")
			if !slices.Equal(slices.Sorted(slices.Values(join)), wantJoin) {
				t.Errorf("--join=%s, want each of the %d pods' stable peer address once: %s", f["join"], n, strings.Join(wantJoin, ","))
			}
			if f["admin-names"] == "" {
				t.Error("no --admin-names: admin calls (remove, members) would be refused to every client certificate")
			}
			if _, ok := f["store"]; ok && f["store"] != "raft" {
				t.Errorf("--store=%s: the StatefulSet is the Raft deployment", f["store"])
			}
		})
	}
}

func TestSecurityContext(t *testing.T) {
	m := load(t)
	pod := m.sts.Spec.Template.Spec
	c := m.container(t)
	psc, csc := pod.SecurityContext, c.SecurityContext
	if psc == nil || csc == nil {
		t.Fatal("set both the pod's and the container's securityContext")
	}
	uid, gid := dockerfileUser(t)
	checks := []struct {
		what string
		ok   bool
	}{
		{"pod runAsNonRoot", isTrue(psc.RunAsNonRoot)},
		{"container runAsNonRoot", csc.RunAsNonRoot == nil || *csc.RunAsNonRoot},
		{fmt.Sprintf("runAsUser %d, the image's user", uid), isInt(psc.RunAsUser, uid) && (csc.RunAsUser == nil || *csc.RunAsUser == uid)},
		{fmt.Sprintf("runAsGroup %d, the image's group", gid), isInt(psc.RunAsGroup, gid) && (csc.RunAsGroup == nil || *csc.RunAsGroup == gid)},
		{"fsGroup is the user's group, which may then read the volume and the Secret", isInt(psc.FSGroup, gid)},
		{"readOnlyRootFilesystem", isTrue(csc.ReadOnlyRootFilesystem)},
		{"allowPrivilegeEscalation false", csc.AllowPrivilegeEscalation != nil && !*csc.AllowPrivilegeEscalation},
		{"not privileged", csc.Privileged == nil || !*csc.Privileged},
		{"capabilities drop ALL and add none", csc.Capabilities != nil && slices.Equal(csc.Capabilities.Drop, []corev1.Capability{"ALL"}) && len(csc.Capabilities.Add) == 0},
		{"seccomp RuntimeDefault", seccompRuntimeDefault(psc.SeccompProfile) && (csc.SeccompProfile == nil || seccompRuntimeDefault(csc.SeccompProfile))},
		{"no host network, PID or IPC", !pod.HostNetwork && !pod.HostPID && !pod.HostIPC},
	}
	for _, ch := range checks {
		if !ch.ok {
			t.Errorf("security context: %s does not hold", ch.what)
		}
	}
	v := m.certsVolume(t)
	if v.Secret.SecretName != "ordinal-tls" {
		t.Errorf("the certificates' Secret is %q; deploy/README.md creates ordinal-tls", v.Secret.SecretName)
	}
	if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode != 0o440 {
		t.Errorf("the certificates' defaultMode must be 0440: private keys readable by the owner and fsGroup only")
	}
	if v.Secret.Optional != nil && *v.Secret.Optional {
		t.Error("the certificates' Secret must not be optional: a node without them would not start, and should say so before it is scheduled")
	}
}

// dockerfileUser reads the USER of ../Dockerfile, which the pods must run
// as: the image's directories belong to it.
func dockerfileUser(t *testing.T) (int64, int64) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	sub := regexp.MustCompile(`(?m)^USER\s+(\d+):(\d+)\s*$`).FindSubmatch(data)
	if sub == nil {
		t.Fatal("../Dockerfile has no numeric USER uid:gid")
	}
	uid, _ := strconv.ParseInt(string(sub[1]), 10, 64)
	gid, _ := strconv.ParseInt(string(sub[2]), 10, 64)
	if uid == 0 {
		t.Fatal("../Dockerfile runs as root")
	}
	return uid, gid
}

func isTrue(b *bool) bool             { return b != nil && *b }
func isInt(p *int64, want int64) bool { return p != nil && *p == want }
func seccompRuntimeDefault(p *corev1.SeccompProfile) bool {
	return p != nil && p.Type == corev1.SeccompProfileTypeRuntimeDefault
}

func TestResources(t *testing.T) {
	m := load(t)
	r := m.container(t).Resources
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, hasReq := r.Requests[name]
		lim, hasLim := r.Limits[name]
		switch {
		case !hasReq || !hasLim:
			t.Errorf("%s: set both a request and a limit", name)
		case req.Sign() <= 0 || req.Cmp(lim) > 0:
			t.Errorf("%s: request %s, limit %s: want 0 < request <= limit", name, req.String(), lim.String())
		}
	}
}

func TestNetworkPolicy(t *testing.T) {
	m := load(t)
	c := m.container(t)
	np := m.netpol.Spec
	if !slices.Equal(np.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
		t.Errorf("policyTypes %v, want [Ingress]", np.PolicyTypes)
	}
	// Who may reach each port: "" for anyone.
	open := map[int32][]string{}
	for _, rule := range np.Ingress {
		from := ""
		if len(rule.From) > 0 {
			if len(rule.From) != 1 || rule.From[0].PodSelector == nil || rule.From[0].NamespaceSelector != nil || rule.From[0].IPBlock != nil {
				t.Errorf("a rule allows %+v: only the ordinal pods themselves are expected", rule.From)
				continue
			}
			if !mapsEqual(rule.From[0].PodSelector.MatchLabels, m.sts.Spec.Selector.MatchLabels) {
				t.Errorf("a rule allows pods %v, not the ordinal pods", rule.From[0].PodSelector.MatchLabels)
			}
			from = "ordinal pods"
		}
		if len(rule.Ports) == 0 {
			t.Error("a rule opens every port")
		}
		for _, p := range rule.Ports {
			if p.Port == nil {
				t.Error("a rule opens every port")
				continue
			}
			cp, ok := containerPort(c, *p.Port)
			if !ok {
				t.Errorf("the NetworkPolicy names port %s, which the container does not have", p.Port.String())
				continue
			}
			open[cp.ContainerPort] = append(open[cp.ContainerPort], from)
		}
	}
	for _, tc := range []struct {
		port string
		want []string
	}{
		{"grpc", []string{""}},
		{"metrics", []string{""}},
		{"peer", []string{"ordinal pods"}},
	} {
		if got := open[namedPort(t, c, tc.port)]; !slices.Equal(got, tc.want) {
			t.Errorf("port %s is open to %q, want %q (\"\": anyone)", tc.port, got, tc.want)
		}
	}
}

// TestFlagsAreServeFlags builds ordinal from this module and checks that
// every flag of the container's command line, and every ORDINAL_<FLAG>
// variable of its environment, is listed by `ordinal serve --help`.
func TestFlagsAreServeFlags(t *testing.T) {
	m := load(t)
	known := proccluster.ServeFlags(t)
	used := map[string]string{}
	for name := range m.serveFlags(t, m.podName(0)) {
		used[name] = "--" + name
	}
	for _, e := range m.container(t).Env {
		if strings.HasPrefix(e.Name, envPrefix) {
			used[strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(e.Name, envPrefix), "_", "-"))] = e.Name
		}
	}
	for name, as := range used {
		if !known[name] {
			t.Errorf("%s: ordinal serve has no flag --%s", as, name)
		}
	}
}
