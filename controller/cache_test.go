package controller

import (
	"slices"
	"strconv"
	"testing"

	"nexus.dev/nexus/api/types"
)

func workloadAt(name string, rv int64) *types.Workload {
	w := &types.Workload{}
	w.Name, w.Namespace, w.ResourceVersion = name, "default", strconv.FormatInt(rv, 10)
	return w
}

// TestCacheKeepsWatchDeletesBuried: a controller's write answered before
// the object's deletion but observed after the watch's delete event (its
// reconcile was still running) does not bring the object back; a later
// creation of the same name does. A deleted workload came back so, and
// its instances lived on until the next resync (TestControllerCollects
// Orphans failed once in make test).
func TestCacheKeepsWatchDeletesBuried(t *testing.T) {
	c := newCache(nil, mustResource("workloads"), nil)
	var changes []string
	c.onChange = append(c.onChange, func(old, nw types.Object) {
		switch {
		case old == nil:
			changes = append(changes, "add "+nw.GetObjectMeta().ResourceVersion)
		case nw == nil:
			changes = append(changes, "delete "+old.GetObjectMeta().ResourceVersion)
		default:
			changes = append(changes, "update "+nw.GetObjectMeta().ResourceVersion)
		}
	})
	c.observe(workloadAt("web", 5), false) // watch: created
	c.observe(workloadAt("web", 9), true)  // watch: deleted at 9
	c.observe(workloadAt("web", 7), false) // a status update's answer, from before
	if o := c.get("default/web"); o != nil {
		t.Fatalf("the deleted workload is back (resourceVersion %s) from a write answered before its delete", o.GetObjectMeta().ResourceVersion)
	}
	c.observe(workloadAt("web", 12), false) // created again
	if o := c.get("default/web"); o == nil || rvOf(o) != 12 {
		t.Fatalf("the workload created again after the delete: %v, want resourceVersion 12", o)
	}
	if want := []string{"add 5", "delete 5", "add 12"}; !slices.Equal(changes, want) {
		t.Fatalf("changes %v, want %v", changes, want)
	}
}
