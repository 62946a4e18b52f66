package controller

import (
	"strings"
	"testing"

	"nexus.dev/nexus/api/types"
)

// owned makes instances of w from specs "name:node:state" (state ready,
// starting or failed).
func owned(w *types.Workload, specs ...string) []*types.Instance {
	var out []*types.Instance
	for _, s := range specs {
		f := strings.Split(s, ":")
		i := inst(f[0] + ":a:" + f[2])
		i.Namespace, i.Spec.NodeName = "default", f[1]
		if w != nil {
			i.OwnerReferences = []types.OwnerReference{{Kind: workloadKind, Name: w.Name, UID: w.UID, Controller: true}}
		}
		out = append(out, i)
	}
	return out
}

func workloadOf(name string, kind types.WorkloadKind, replicas int32, maxUnavailable types.IntOrPercent) *types.Workload {
	w := &types.Workload{}
	w.Name, w.Namespace, w.UID = name, "default", "uid-"+name
	w.Spec.Kind, w.Spec.Replicas = kind, &replicas
	w.Spec.Strategy = types.UpdateStrategy{MaxSurge: types.Percent(25), MaxUnavailable: maxUnavailable}
	return w
}

// TestControllerPlanDrain: a drain step deletes a service's instances on
// the node only while more than replicas - maxUnavailable (at least 1)
// stay ready, its unready ones always; jobs' instances go; daemons and
// finished instances are left to the controller; instances no workload
// owns go only with force.
func TestControllerPlanDrain(t *testing.T) {
	web := workloadOf("web", types.KindService, 4, types.Count(1))
	wide := workloadOf("wide", types.KindService, 4, types.Count(2))
	one := workloadOf("one", types.KindService, 3, types.Percent(25))
	job := workloadOf("job", types.KindJob, 1, types.IntOrPercent{})
	dmn := workloadOf("dmn", types.KindDaemon, 0, types.IntOrPercent{})
	wls := map[string]*types.Workload{}
	for _, w := range []*types.Workload{web, wide, one, job, dmn} {
		wls[keyOf(w)] = w
	}
	cat := func(lists ...[]*types.Instance) []*types.Instance {
		var out []*types.Instance
		for _, l := range lists {
			out = append(out, l...)
		}
		return out
	}
	for _, tc := range []struct {
		name      string
		insts     []*types.Instance
		force     bool
		evict     string
		waiting   int
		unowned   string
		remaining int
	}{
		{name: "all ready, maxUnavailable 1: one goes",
			insts: owned(web, "web-1:n1:ready", "web-2:n1:ready", "web-3:n2:ready", "web-4:n2:ready"),
			evict: "web-1", waiting: 1, remaining: 2},
		{name: "one already replaced but not ready: none goes",
			insts:   owned(web, "web-2:n1:ready", "web-3:n2:ready", "web-4:n2:ready", "web-5:n2:starting"),
			waiting: 1, remaining: 1},
		{name: "unready on the node go at once",
			insts: owned(web, "web-1:n1:starting", "web-2:n1:ready", "web-3:n2:ready", "web-4:n2:ready"),
			evict: "web-1", waiting: 1, remaining: 2},
		{name: "maxUnavailable 2: two go",
			insts: owned(wide, "wide-1:n1:ready", "wide-2:n1:ready", "wide-3:n1:ready", "wide-4:n2:ready"),
			evict: "wide-1,wide-2", waiting: 1, remaining: 3},
		{name: "maxUnavailable rounding to 0 drains one at a time",
			insts: owned(one, "one-1:n1:ready", "one-2:n1:ready", "one-3:n2:ready"),
			evict: "one-1", waiting: 1, remaining: 2},
		{name: "jobs go, daemons and finished instances are not counted",
			insts: cat(owned(job, "job-1:n1:ready"), owned(dmn, "dmn-1:n1:ready"), owned(web, "web-9:n1:failed")),
			evict: "job-1", remaining: 1},
		{name: "unowned without force: refused",
			insts: cat(owned(nil, "bare-1:n1:ready"), owned(job, "job-1:n1:ready")),
			evict: "job-1", unowned: "default/bare-1", remaining: 2},
		{name: "unowned with force: deleted",
			insts: owned(nil, "bare-1:n1:ready"), force: true,
			evict: "bare-1", remaining: 1},
		{name: "nothing on the node",
			insts: owned(web, "web-3:n2:ready")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := planDrain(drainView{node: "n1", instances: tc.insts, workloads: wls, force: tc.force})
			if names(p.evict) != tc.evict || len(p.waiting) != tc.waiting || strings.Join(p.unowned, ",") != tc.unowned || p.remaining != tc.remaining {
				t.Fatalf("evict %q waiting %q unowned %v remaining %d; want %q, %d waiting, %q, %d",
					names(p.evict), p.waiting, p.unowned, p.remaining, tc.evict, tc.waiting, tc.unowned, tc.remaining)
			}
		})
	}
}
