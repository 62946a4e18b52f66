package api_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"nexus.dev/nexus/api"
	"nexus.dev/nexus/api/apitest"
	"nexus.dev/nexus/api/servertest"
)

// BenchmarkGet: authenticated GETs of one object over HTTP/2 with mutual
// TLS, from parallel clients each with its own identity.
func BenchmarkGet(b *testing.B) {
	// No rate limit: this measures the server, not the limiter.
	c := servertest.StartServer(b, apitest.NexusStore(b), servertest.ServerOptions{Limits: api.Limits{RequestsPerSecond: 1e9, Burst: 1e9, MaxInFlight: 1e6, MaxBodyBytes: 1 << 20, MaxWatches: 10}})
	admin := c.HTTPClient(b, c.User(b, "admin"), false)
	req, _ := http.NewRequest("POST", c.URL()+"/v1/namespaces/default/workloads", strings.NewReader(webYAML))
	req.Header.Set("Content-Type", "application/yaml")
	resp, err := admin.Do(req)
	if err != nil || resp.StatusCode != 201 {
		b.Fatalf("create: %v %v", resp, err)
	}
	resp.Body.Close()
	req, _ = http.NewRequest("POST", c.URL()+"/v1/clusterrolebindings", strings.NewReader(`{"kind":"ClusterRoleBinding","metadata":{"name":"bench"},"subjects":[{"kind":"Group","name":"bench"}],"roleRef":{"kind":"ClusterRole","name":"view"}}`))
	req.Header.Set("Content-Type", "application/json")
	if resp, err = admin.Do(req); err != nil || resp.StatusCode != 201 {
		b.Fatalf("bind: %v %v", resp, err)
	}
	resp.Body.Close()
	url := c.URL() + "/v1/namespaces/default/workloads/web"
	probe := c.HTTPClient(b, c.User(b, "probe", "bench"), false)
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, err := probe.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			b.Fatal("the bench group's binding never took effect")
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.ResetTimer()
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		// An identity per client: one identity alone would meet its rate limit.
		hc := c.HTTPClient(b, c.User(b, fmt.Sprintf("bench%d", n.Add(1)), "bench"), false)
		for pb.Next() {
			resp, err := hc.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("GET: %d", resp.StatusCode)
				return
			}
		}
	})
}

// BenchmarkCreate: authenticated creates of small workloads over HTTP/2
// with mutual TLS, from parallel clients each with its own identity.
func BenchmarkCreate(b *testing.B) {
	c := servertest.StartServer(b, apitest.NexusStore(b), servertest.ServerOptions{Limits: api.Limits{RequestsPerSecond: 1e9, Burst: 1e9, MaxInFlight: 1e6, MaxBodyBytes: 1 << 20, MaxWatches: 10}})
	var n atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		id := n.Add(1)
		hc := c.HTTPClient(b, c.User(b, "admin"), false)
		for i := 0; pb.Next(); i++ {
			body := fmt.Sprintf(`{"kind":"Workload","metadata":{"name":"web-%d-%d","labels":{"app":"web"}},"spec":{"replicas":3,"template":{"image":"nexus.local/hello","ports":[{"name":"http","port":8080}]}}}`, id, i)
			req, _ := http.NewRequest("POST", c.URL()+"/v1/namespaces/default/workloads", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 201 {
				b.Errorf("create: %d", resp.StatusCode)
				return
			}
		}
	})
}
