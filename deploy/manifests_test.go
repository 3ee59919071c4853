package deploy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/darkit/protoplex"
)

// manifests are the Kubernetes objects of deploy/k8s, each decoded
// strictly into its k8s.io/api type.
type manifests struct {
	configMaps   []*corev1.ConfigMap
	services     []*corev1.Service
	deployments  []*appsv1.Deployment
	statefulSets []*appsv1.StatefulSet
}

// loadManifests decodes every document of deploy/k8s/*.yaml into the type
// its apiVersion and kind name, strictly: a field the type does not have
// (a typo, a field at the wrong level) or a value of the wrong type is an
// error, as the API server's strict validation would report it. This is
// the offline validator: no cluster, no downloaded schema.
func loadManifests(t *testing.T) manifests {
	t.Helper()
	files, _ := filepath.Glob("k8s/*.yaml")
	if len(files) == 0 {
		t.Fatal("no manifests in deploy/k8s")
	}
	var m manifests
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for i := 0; ; i++ {
			var doc map[string]any
			if err := dec.Decode(&doc); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			raw, err := yaml.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			strict := func(into any) {
				if err := sigsyaml.UnmarshalStrict(raw, into); err != nil {
					t.Errorf("%s document %d (%v %v): %v", f, i, doc["apiVersion"], doc["kind"], err)
				}
			}
			switch kind := fmt.Sprint(doc["apiVersion"], " ", doc["kind"]); kind {
			case "v1 ConfigMap":
				o := &corev1.ConfigMap{}
				strict(o)
				m.configMaps = append(m.configMaps, o)
			case "v1 Service":
				o := &corev1.Service{}
				strict(o)
				m.services = append(m.services, o)
			case "apps/v1 Deployment":
				o := &appsv1.Deployment{}
				strict(o)
				m.deployments = append(m.deployments, o)
			case "apps/v1 StatefulSet":
				o := &appsv1.StatefulSet{}
				strict(o)
				m.statefulSets = append(m.statefulSets, o)
			default:
				t.Errorf("%s document %d: %s is not a kind this test knows: add its k8s.io/api type", f, i, kind)
			}
		}
	}
	return m
}

// pods are the workloads' pod templates, by workload name.
func (m manifests) pods() map[string]corev1.PodTemplateSpec {
	out := map[string]corev1.PodTemplateSpec{}
	for _, d := range m.deployments {
		out[d.Name] = d.Spec.Template
	}
	for _, s := range m.statefulSets {
		out[s.Name] = s.Spec.Template
	}
	return out
}

// TestKubernetesManifests: the manifests are valid API objects (strict
// decoding into k8s.io/api types) and fit together as a cluster would run
// them: each workload's selector selects its own pods; each Service selects
// pods that have the ports it targets; the LoadBalancer exposes the data
// port only (the metrics and health ports have no authentication,
// docs/security.md), keeping the client's address (externalTrafficPolicy:
// Local); every host the ConfigMap's protoplex configuration routes or
// connects to is a Service of the manifests; the protoplex image, built
// locally, has a version tag and is never pulled; the pod outlives the
// drain and reloads the mounted file (-watch).
func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t)
	pods := m.pods()
	services := map[string]*corev1.Service{}
	for _, s := range m.services {
		services[s.Name] = s
	}
	for name, d := range m.deployments {
		sel := labels.SelectorFromSet(d.Spec.Selector.MatchLabels)
		if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("deployment %d (%s): its selector does not select its pods", name, d.Name)
		}
	}
	for _, s := range m.services {
		sel := labels.SelectorFromSet(s.Spec.Selector)
		var ports []int32
		for _, pod := range pods {
			if len(s.Spec.Selector) > 0 && sel.Matches(labels.Set(pod.Labels)) {
				for _, c := range pod.Spec.Containers {
					for _, p := range c.Ports {
						ports = append(ports, p.ContainerPort)
					}
				}
			}
		}
		if len(ports) == 0 {
			t.Errorf("service %s selects no pod of the manifests", s.Name)
		}
		for _, p := range s.Spec.Ports {
			if !slices.Contains(ports, p.TargetPort.IntVal) {
				t.Errorf("service %s targets port %d, which its pods do not expose", s.Name, p.TargetPort.IntVal)
			}
			if s.Spec.Type == corev1.ServiceTypeLoadBalancer && (p.TargetPort.IntVal == 9091 || p.TargetPort.IntVal == 9092) {
				t.Errorf("LoadBalancer %s exposes the monitoring port %d to the outside", s.Name, p.TargetPort.IntVal)
			}
		}
		if s.Spec.Type == corev1.ServiceTypeLoadBalancer && s.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
			t.Errorf("LoadBalancer %s: externalTrafficPolicy %q: clients would be seen as node addresses", s.Name, s.Spec.ExternalTrafficPolicy)
		}
	}
	var metrics bool
	for _, s := range m.services {
		for _, p := range s.Spec.Ports {
			metrics = metrics || (p.TargetPort.IntVal == 9091 && s.Spec.Type == corev1.ServiceTypeClusterIP)
		}
	}
	if !metrics {
		t.Error("no ClusterIP Service for the metrics port 9091")
	}

	// The protoplex pods: their configuration, image and lifecycle.
	var checked int
	for name, pod := range pods {
		for _, c := range pod.Spec.Containers {
			if !strings.HasPrefix(c.Image, "protoplex:") {
				continue
			}
			checked++
			if tag := strings.TrimPrefix(c.Image, "protoplex:"); tag == "latest" || tag == "" {
				t.Errorf("%s: image %s: a locally built image needs a version tag", name, c.Image)
			}
			if c.ImagePullPolicy != corev1.PullIfNotPresent {
				t.Errorf("%s: imagePullPolicy %q: a locally built image must not be pulled", name, c.ImagePullPolicy)
			}
			if !slices.Contains(c.Args, "-watch") {
				t.Errorf("%s: args %q: without -watch a ConfigMap update is never applied", name, c.Args)
			}
			cfg := configOf(t, m, pod)
			if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || float64(*g) <= cfg.Server.GracefulShutdownTimeout.Seconds() {
				t.Errorf("%s: terminationGracePeriodSeconds %v does not outlast the %v drain", name, g, cfg.Server.GracefulShutdownTimeout)
			}
			hosts := targetHosts(cfg)
			for _, e := range cfg.Distributed.EtcdEndpoints {
				hosts = append(hosts, e)
			}
			for _, env := range c.Env {
				if env.Name == "ETCD_ENDPOINTS" {
					hosts = append(hosts, strings.Split(env.Value, ",")...)
				}
			}
			for _, h := range hosts {
				host, _, err := net.SplitHostPort(h)
				if err != nil {
					host = h
				}
				if _, ok := services[strings.Split(host, ".")[0]]; !ok {
					t.Errorf("%s connects to %s, a Service the manifests never create", name, h)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no protoplex container in the manifests")
	}
}

// configOf parses the protoplex configuration pod mounts from a ConfigMap.
func configOf(t *testing.T, m manifests, pod corev1.PodTemplateSpec) *protoplex.Config {
	t.Helper()
	for _, v := range pod.Spec.Volumes {
		if v.ConfigMap == nil {
			continue
		}
		for _, cm := range m.configMaps {
			if cm.Name == v.ConfigMap.Name {
				cfg, err := protoplex.ParseConfig([]byte(cm.Data["config.yaml"]), cm.Name+"/config.yaml")
				if err != nil {
					t.Fatal(err)
				}
				return cfg
			}
		}
		t.Fatalf("volume %s: no ConfigMap %s in the manifests", v.Name, v.ConfigMap.Name)
	}
	t.Fatal("the protoplex pod mounts no ConfigMap")
	return nil
}

// targetHosts lists every target of cfg's routes.
func targetHosts(cfg *protoplex.Config) []string {
	var out []string
	for _, p := range cfg.Protocols {
		for _, t := range p.Target {
			for _, one := range strings.Split(t, ",") {
				out = append(out, strings.TrimSpace(one))
			}
		}
	}
	return out
}

// TestImageConfigTargets: the image's configuration (deploy/config.yaml)
// and the compose file's nodes route to names their containers resolve —
// a service of the compose file or a host the service maps — never to
// loopback, which in a container is the container itself.
func TestImageConfigTargets(t *testing.T) {
	var compose struct {
		Services map[string]struct {
			Image      string
			Volumes    []string
			ExtraHosts []string `yaml:"extra_hosts"`
		}
	}
	data, err := os.ReadFile("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatal(err)
	}
	// Each configuration with the services that run it; the image's own
	// is checked even when no service runs it.
	runs := map[string][]string{"config.yaml": nil}
	for name, svc := range compose.Services {
		if !strings.HasPrefix(svc.Image, "protoplex:") {
			continue
		}
		file := "config.yaml" // the image's own
		for _, v := range svc.Volumes {
			if src, dst, _ := strings.Cut(v, ":"); strings.HasPrefix(dst, "/etc/protoplex/config.yaml") {
				file = strings.TrimPrefix(src, "./")
			}
		}
		runs[file] = append(runs[file], name)
	}
	for file, users := range runs {
		cfg, err := protoplex.LoadConfig(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, target := range targetHosts(cfg) {
			host, _, err := net.SplitHostPort(target)
			if err != nil {
				t.Errorf("%s: target %q: %v", file, target, err)
				continue
			}
			if ip := net.ParseIP(host); host == "localhost" || (ip != nil && (ip.IsLoopback() || ip.IsUnspecified())) {
				t.Errorf("%s: target %s is the container itself", file, target)
				continue
			}
			if _, ok := compose.Services[host]; ok {
				continue
			}
			for _, name := range users {
				if !slices.ContainsFunc(compose.Services[name].ExtraHosts, func(h string) bool { return strings.HasPrefix(h, host+":") }) {
					t.Errorf("%s (service %s): target %s is neither a compose service nor one of its extra_hosts", file, name, target)
				}
			}
			if len(users) == 0 {
				t.Errorf("%s: target %s is no compose service", file, target)
			}
		}
	}
	users := len(runs["config.yaml"])
	if users == 0 {
		t.Error("no compose service runs the image's own configuration: nothing shows what its targets are")
	}
}

// dockerignored reports whether path (slash-separated, relative to the
// context) is excluded by patterns: Docker's rules as this repository
// uses them — the last matching pattern decides, "!" re-includes, "**"
// spans directories, a leading "/" anchors nothing more (paths are
// relative already), and a pattern that matches a directory excludes what
// is under it.
func dockerignored(patterns []string, path string) bool {
	excluded := false
	for _, p := range patterns {
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimPrefix(strings.TrimPrefix(p, "!"), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(p); i++ {
			switch {
			case strings.HasPrefix(p[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(p[i:], "**"):
				re.WriteString(".*")
				i++
			case p[i] == '*':
				re.WriteString("[^/]*")
			case p[i] == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(p[i : i+1]))
			}
		}
		re.WriteString("(/.*)?$")
		if regexp.MustCompile(re.String()).MatchString(path) {
			excluded = !neg
		}
	}
	return excluded
}

// TestDockerignore: the build context (the repository root) keeps every
// file the image's build reads — the module files, every Go source and
// embedded file of cmd/protoplex's packages, the configuration the
// Dockerfile copies — and leaves out the history, tests and binaries.
func TestDockerignore(t *testing.T) {
	data, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	out, err := exec.Command("go", "list", "-deps", "-f", `{{if not .Standard}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}
{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}
{{end}}{{end}}`, "../cmd/protoplex").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatal(err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	need := []string{"go.mod", "go.sum", "deploy/config.yaml"}
	for _, f := range strings.Fields(string(out)) {
		if rel, err := filepath.Rel(root, f); err == nil && !strings.HasPrefix(rel, "..") {
			need = append(need, filepath.ToSlash(rel))
		}
	}
	if len(need) < 20 {
		t.Fatalf("go list found only %v", need)
	}
	for _, f := range need {
		if dockerignored(patterns, f) {
			t.Errorf("%s is needed by the build but .dockerignore leaves it out", f)
		}
	}
	for _, f := range []string{".git/HEAD", "manager_test.go", "internal/config/parse_test.go", "protocols/testdata/flights/x", "protoplex", "bench/run.sh", "e2e/core_test.go"} {
		if !dockerignored(patterns, f) {
			t.Errorf("%s goes into the build context", f)
		}
	}
}

// TestStrictDecodingCatchesTypos: the validator of TestKubernetesManifests
// refuses what the API server would: a misspelt field, a field at the
// wrong level, a value of the wrong type.
func TestStrictDecodingCatchesTypos(t *testing.T) {
	const pod = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  selector: {matchLabels: {app: x}}\n  template:\n    metadata: {labels: {app: x}}\n    spec:\n      containers:\n        - name: x\n          image: x:1\n"
	if err := sigsyaml.UnmarshalStrict([]byte(pod), &appsv1.Deployment{}); err != nil {
		t.Fatalf("a valid Deployment: %v", err)
	}
	for name, bad := range map[string]string{
		"misspelt field": pod + "          imagePullPolicyy: IfNotPresent\n",
		"wrong level":    pod + "  externalTrafficPolicy: Local\n",
		"wrong type":     strings.Replace(pod, "image: x:1", "image: [x]", 1),
	} {
		if err := sigsyaml.UnmarshalStrict([]byte(bad), &appsv1.Deployment{}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
