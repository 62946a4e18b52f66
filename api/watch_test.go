package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"nexus.dev/nexus/api/apitest"
	"nexus.dev/nexus/api/servertest"
)

type watchObj struct {
	Metadata struct {
		Name, ResourceVersion string
	}
}

// openWatch starts a watch and returns its events as they come.
func openWatch(t *testing.T, cl client, path string) (<-chan apiEvent, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", cl.url+path, nil)
	resp, err := cl.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("watch %s: %d", path, resp.StatusCode)
	}
	ch := make(chan apiEvent, 1000)
	go func() {
		defer close(ch)
		dec := json.NewDecoder(resp.Body)
		for {
			var ev struct {
				Type   string
				Object json.RawMessage
			}
			if dec.Decode(&ev) != nil {
				return
			}
			var o watchObj
			_ = json.Unmarshal(ev.Object, &o)
			ch <- apiEvent{ev.Type, o, ev.Object}
		}
	}()
	return ch, func() { cancel(); resp.Body.Close() }
}

type apiEvent struct {
	Type string
	Obj  watchObj
	Raw  json.RawMessage
}

// TestWatchOverHTTPResumesAndIsGoneAfterCompaction: a client that loses its
// watch and resumes from the last resourceVersion it saw gets every change
// once; one that resumes from a compacted revision gets 410.
func TestWatchOverHTTPResumesAndIsGoneAfterCompaction(t *testing.T) {
	for _, b := range apitest.Backends(t) {
		t.Run(b.Name, func(t *testing.T) {
			c := servertest.StartServer(t, b, servertest.ServerOptions{})
			cl := client{t: t, hc: c.HTTPClient(t, c.User(t, "admin"), false), url: c.URL()}
			base := "/v1/namespaces/default/workloads"
			l := cl.must(200, "GET", base, "", nil)
			var list struct {
				Metadata struct{ ResourceVersion string }
			}
			_ = json.Unmarshal(l.body, &list)
			evs, stop := openWatch(t, cl, base+"?watch=true&resourceVersion="+list.Metadata.ResourceVersion)
			create := func(i int) string {
				r := cl.must(201, "POST", base, "application/json", fmt.Sprintf(`{"kind":"Workload","metadata":{"name":"w%d"},"spec":{"template":{"image":"a"}}}`, i))
				var o watchObj
				_ = json.Unmarshal(r.body, &o)
				return o.Metadata.ResourceVersion
			}
			var want []string
			for i := range 10 {
				want = append(want, create(i))
			}
			var got []string
			for len(got) < 5 {
				ev := <-evs
				if ev.Type == "ADDED" {
					got = append(got, ev.Obj.Metadata.ResourceVersion)
				}
			}
			stop() // the connection is lost
			for i := 10; i < 15; i++ {
				want = append(want, create(i))
			}
			evs2, stop2 := openWatch(t, cl, base+"?watch=true&resourceVersion="+got[len(got)-1])
			defer stop2()
			timeout := time.After(20 * time.Second)
			for len(got) < len(want) {
				select {
				case ev, ok := <-evs2:
					if !ok {
						t.Fatal("resumed watch ended")
					}
					if ev.Type == "ADDED" {
						got = append(got, ev.Obj.Metadata.ResourceVersion)
					}
				case <-timeout:
					t.Fatalf("resumed watch delivered %d of %d", len(got), len(want))
				}
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("event %d at %s, want %s (lost or repeated)\n%v\n%v", i, got[i], want[i], got, want)
				}
			}
			// Compact past the first revision: resuming from it is Gone.
			last, _ := strconv.ParseInt(want[len(want)-1], 10, 64)
			if _, err := b.Client(t).Compact(context.Background(), last); err != nil {
				t.Fatal(err)
			}
			r := cl.do("GET", base+"?watch=true&resourceVersion="+want[0], "", nil)
			if r.code != 410 || r.problem.Reason != "Gone" || r.problem.CurrentResourceVersion == "" {
				t.Fatalf("watch from a compacted revision: %d %s", r.code, r.body)
			}
		})
	}
}

// TestConcurrentUpdatesOverHTTP: 50 updates carrying one resourceVersion,
// at once: exactly one succeeds, 49 get 409.
func TestConcurrentUpdatesOverHTTP(t *testing.T) {
	c := servertest.StartServer(t, apitest.NexusStore(t), servertest.ServerOptions{})
	cl := client{t: t, hc: c.HTTPClient(t, c.User(t, "admin"), false), url: c.URL()}
	r := cl.must(201, "POST", "/v1/namespaces/default/workloads", "application/yaml", webYAML)
	var o watchObj
	_ = json.Unmarshal(r.body, &o)
	var wg sync.WaitGroup
	codes := make(chan int, 50)
	for i := range 50 {
		wg.Go(func() {
			body := fmt.Sprintf(`{"kind":"Workload","metadata":{"name":"web","resourceVersion":%q},"spec":{"replicas":%d,"template":{"image":"nexus.local/hello"}}}`, o.Metadata.ResourceVersion, i+3)
			codes <- cl.do("PUT", "/v1/namespaces/default/workloads/web", "application/json", body).code
		})
	}
	wg.Wait()
	close(codes)
	n := map[int]int{}
	for c := range codes {
		n[c]++
	}
	if n[200] != 1 || n[409] != 49 {
		t.Fatalf("status codes %v, want one 200 and 49 409", n)
	}
}
